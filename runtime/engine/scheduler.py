"""Continuous batching: which sequences the next forward pass feeds, and how many tokens each.

Requests join the waiting queue at any time and leave the running list as soon as they finish, so a
batch changes between steps. Each step is either a prefill step (waiting requests admitted in arrival
order while the token budget, the sequence limit and the free blocks allow; a prompt longer than the
budget is prefilled in chunks over several steps) or, when nothing can be admitted, a decode step
over every running request. Prefill goes first, so a new request waits at most one decode step.

When a decode step needs more blocks than are free, the newest running request is preempted: its
blocks are freed and it goes back to the front of the waiting queue to be recomputed (prefix caching
usually makes that cheap). The oldest request always makes progress, and admission control in the
engine guarantees that any single request fits the pool on its own, so the scheduler cannot deadlock.

All sequences of a request are scheduled together: a request is admitted, preempted and sampled as a
unit, so beams always step in lockstep.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from runtime.engine.block_manager import BlockManager
from runtime.engine.sequence import Request, Sequence, SequenceStatus


@dataclass
class ScheduledBatch:
    """One forward pass worth of work.

    Attributes:
        seqs: the sequences fed.
        num_new_tokens: per sequence, how many of its uncached tokens are fed (>= 1).
        copy_pairs: (source, destination) KV blocks to copy before the pass (copy-on-write).
        is_prefill: whether this is a prefill step (admitted or recomputed requests only).
    """

    seqs: list[Sequence]
    num_new_tokens: list[int]
    copy_pairs: list[tuple[int, int]] = field(default_factory=list)
    is_prefill: bool = False


def _width(request: Request) -> int:
    """Sequences a request runs at its widest: its beams, or its `n` samples (forked after prefill)."""
    return max(len(request.seqs), request.params.num_beams, 1 if request.is_forked else request.params.n)


class Scheduler:
    """Chooses each step's batch and keeps the waiting and running queues.

    Args:
        block_manager: the KV block pool the scheduler allocates from.
        max_num_seqs: most sequences in one batch.
        max_num_batched_tokens: most tokens fed in one prefill step (longer prompts are chunked).
    """

    def __init__(self, block_manager: BlockManager, *, max_num_seqs: int, max_num_batched_tokens: int) -> None:
        self.block_manager = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.num_preemptions = 0

    def add(self, request: Request) -> None:
        """Queue a new request for prefill."""
        self.waiting.append(request)

    def has_unfinished(self) -> bool:
        """Whether any request is waiting or running."""
        return bool(self.waiting or self.running)

    def remove(self, request: Request) -> None:
        """Take a request out of the queues and free the blocks of its live sequences (finish or abort)."""
        for seq in request.seqs:
            self.block_manager.free(seq)
        if request in self.running:
            self.running.remove(request)
        elif request in self.waiting:
            self.waiting.remove(request)

    def free_seq(self, seq: Sequence) -> None:
        """Release one finished sequence's blocks while its request goes on."""
        self.block_manager.free(seq)

    def schedule(self) -> ScheduledBatch | None:
        """The next step's batch: a prefill step if any waiting request can be admitted, else a decode step.

        Returns:
            None when there is nothing to run.
        """
        batch = self._schedule_prefill() or self._schedule_decode()
        if batch is None and self.waiting:
            # The decode step preempted every running request, itself included: admit again.
            batch = self._schedule_prefill()
        return batch

    def _schedule_prefill(self) -> ScheduledBatch | None:
        batch = ScheduledBatch(seqs=[], num_new_tokens=[], is_prefill=True)
        token_budget = self.max_num_batched_tokens
        num_seqs = sum(_width(request) for request in self.running)
        for request in list(self.waiting):
            if token_budget <= 0:
                break
            if not request.seqs[0].block_table:
                if num_seqs + _width(request) > self.max_num_seqs or not self._can_allocate(request):
                    break
                for seq in request.seqs:
                    self.block_manager.allocate(seq)
            num_seqs += _width(request)
            wanted = [self._prefill_chunk(seq) for seq in request.seqs]
            completes = wanted == [seq.num_uncached for seq in request.seqs]
            if completes and sum(wanted) <= token_budget:
                chunks = wanted
                self.waiting.remove(request)
                self.running.append(request)
                for seq in request.seqs:
                    seq.status = SequenceStatus.RUNNING
            elif completes and batch.seqs:
                break  # next step it comes first, with the whole budget: fed as it would be alone
            else:
                # A partial chunk never feeds a sequence's last token, so the whole request samples
                # together in the step that completes it.
                share = token_budget // len(request.seqs)
                chunks = [min(chunk, seq.num_uncached - 1, share) for chunk, seq in zip(wanted, request.seqs)]
            token_budget -= sum(chunks)
            for seq, num_new in zip(request.seqs, chunks):
                if num_new > 0:
                    batch.seqs.append(seq)
                    batch.num_new_tokens.append(num_new)
            if chunks != wanted:
                break  # cut by the budget: the rest of it comes next step, before anything behind it
        return batch if batch.seqs else None

    def _prefill_chunk(self, seq: Sequence) -> int:
        """How many of `seq`'s uncached tokens the next prefill step may feed: all of them, except that
        with prefix caching the tokens after its last cacheable block get a forward pass of their own.
        A later request with the same prompt finds those blocks cached and feeds just those tokens:
        fed alike, they are computed alike (bfloat16 results depend on what else shares a pass), so
        the same prompt and seed give the same completion whether or not the cache was warm."""
        if not self.block_manager.enable_prefix_caching:
            return seq.num_uncached
        block_size = self.block_manager.block_size
        boundary = (seq.num_tokens - 1) // block_size * block_size  # end of the last cacheable block
        return boundary - seq.num_cached if seq.num_cached < boundary else seq.num_uncached

    def _can_allocate(self, request: Request) -> bool:
        num_needed = sum(self.block_manager.num_blocks_needed_to_allocate(seq) for seq in request.seqs)
        return num_needed <= self.block_manager.num_free_blocks

    def _schedule_decode(self) -> ScheduledBatch | None:
        batch = ScheduledBatch(seqs=[], num_new_tokens=[])
        scheduled: list[Request] = []
        # Oldest first; the newest running request is the preemption victim.
        for request in list(self.running):
            if request not in self.running:
                continue  # preempted as a victim earlier in this loop
            while not self._can_append(request):
                victim = self.running[-1]
                self._preempt(victim)
                if victim is request:
                    break
            if request not in self.running:
                break
            scheduled.append(request)
            for seq in request.seqs:
                batch.copy_pairs.extend(self.block_manager.append(seq))
                batch.seqs.append(seq)
                batch.num_new_tokens.append(seq.num_uncached)
        return batch if batch.seqs else None

    def _can_append(self, request: Request) -> bool:
        return self.block_manager.num_blocks_needed_to_append(request.seqs) <= self.block_manager.num_free_blocks

    def _preempt(self, request: Request) -> None:
        """Free a running request's blocks and queue it first for recompute."""
        self.running.remove(request)
        for seq in request.seqs:
            self.block_manager.free(seq)
            seq.status = SequenceStatus.WAITING
        self.waiting.appendleft(request)
        self.num_preemptions += 1
