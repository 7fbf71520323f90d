"""Paged KV-cache bookkeeping: which fixed-size block holds which positions of which sequence.

This is the control plane only: it hands out block ids and tells the model runner which blocks to
copy; the runner owns the tensors. Blocks are refcounted so sequences can share a prefix (parallel
samples of one prompt, beams) and are copied on write when a sharer writes into a shared block.
Full blocks can also be found again by content (prefix caching): each is keyed by a hash chained over
its tokens and its predecessor's key, and a hit is verified against the stored tokens and parent key.
Freed blocks keep their key until reused, so a later request with the same prefix skips its prefill.

Every mutating action has a predicate (`can_allocate`/`allocate`, `can_append`/`append`) so the
scheduler checks before it acts and an action never fails halfway.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from runtime.engine.sequence import Sequence
from runtime.errors import EngineError

#: Parent key of a sequence's first block.
_ROOT_HASH = 0


@dataclass(eq=False)
class _Block:
    block_id: int
    ref_count: int = 0
    #: Content key while the block is full and its KV final; None while it may still be written.
    hash: int | None = None
    parent_hash: int = _ROOT_HASH
    token_ids: tuple[int, ...] = ()


class BlockManager:
    """A pool of `num_blocks` KV blocks of `block_size` positions, shared by refcount.

    Args:
        num_blocks: size of the pool (the model runner's `num_blocks`).
        block_size: positions per block (the model runner's `block_size`).
        bytes_per_token: KV bytes one position takes across all layers, for `bytes_used`.
        enable_prefix_caching: find full blocks again by content across sequences and requests.
    """

    def __init__(
        self, num_blocks: int, block_size: int, *, bytes_per_token: int = 0, enable_prefix_caching: bool = True
    ) -> None:
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.bytes_per_token = bytes_per_token
        self.enable_prefix_caching = enable_prefix_caching
        self._blocks = [_Block(block_id) for block_id in range(num_blocks)]
        # Insertion order is eviction order: the least recently freed cached block is reused first.
        self._free_ids: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self._hash_to_block_id: dict[int, int] = {}

    # Accounting

    @property
    def num_free_blocks(self) -> int:
        """Blocks no sequence holds (cached-but-free blocks count: they are reused on demand)."""
        return len(self._free_ids)

    @property
    def num_used_blocks(self) -> int:
        """Blocks held by at least one sequence."""
        return self.num_blocks - len(self._free_ids)

    @property
    def bytes_used(self) -> int:
        """KV memory held by live sequences, in bytes."""
        return self.num_used_blocks * self.block_size * self.bytes_per_token

    @property
    def num_cached_blocks(self) -> int:
        """Full blocks findable by prefix hash (held or free)."""
        return len(self._hash_to_block_id)

    def ref_count(self, block_id: int) -> int:
        """How many sequences hold `block_id` (0 = free)."""
        return self._blocks[block_id].ref_count

    def num_blocks_for(self, num_tokens: int) -> int:
        """Blocks needed to hold `num_tokens` positions."""
        return -(-num_tokens // self.block_size)

    # Allocation of a sequence that holds no blocks (new, or preempted for recompute)

    def can_allocate(self, seq: Sequence) -> bool:
        """Whether `allocate(seq)` would find enough blocks for all of `seq`'s tokens."""
        return self.num_blocks_needed_to_allocate(seq) <= len(self._free_ids)

    def num_blocks_needed_to_allocate(self, seq: Sequence) -> int:
        """Free blocks `allocate(seq)` would take: fresh ones past the prefix hits, plus hits sitting free."""
        return self._num_blocks_needed_to_allocate(seq, self._match_prefix(seq))

    def allocate(self, seq: Sequence) -> None:
        """Give `seq` a block table covering its tokens, reusing cached full blocks of its prefix.

        Sets `seq.num_cached` to the number of positions found in the cache (always leaving at least
        one token to feed, since sampling needs the last position's logits).

        Raises:
            EngineError: the sequence already holds blocks, or the pool is short (check can_allocate).
        """
        if seq.block_table:
            raise EngineError(f"sequence {seq.seq_id} already holds KV blocks")
        hit_ids = self._match_prefix(seq)
        if self._num_blocks_needed_to_allocate(seq, hit_ids) > len(self._free_ids):
            raise EngineError(f"not enough free KV blocks for sequence {seq.seq_id}")
        for block_id in hit_ids:
            self._acquire(block_id)
        seq.block_table = list(hit_ids)
        seq.num_cached = len(hit_ids) * self.block_size
        while len(seq.block_table) < self.num_blocks_for(seq.num_tokens):
            seq.block_table.append(self._take_free_block())

    def _num_blocks_needed_to_allocate(self, seq: Sequence, hit_ids: list[int]) -> int:
        num_hits_in_use = sum(1 for block_id in hit_ids if self._blocks[block_id].ref_count > 0)
        return self.num_blocks_for(seq.num_tokens) - num_hits_in_use

    def _match_prefix(self, seq: Sequence) -> list[int]:
        """Ids of cached blocks holding `seq`'s leading full blocks, verified token by token."""
        if not self.enable_prefix_caching:
            return []
        hit_ids: list[int] = []
        parent_hash = _ROOT_HASH
        # Full blocks strictly before the last token: the last position must be fed to get logits.
        for index in range((seq.num_tokens - 1) // self.block_size):
            token_ids = tuple(seq.token_ids[index * self.block_size : (index + 1) * self.block_size])
            block_hash = hash((parent_hash, token_ids))
            block_id = self._hash_to_block_id.get(block_hash)
            if block_id is None:
                break
            block = self._blocks[block_id]
            if block.token_ids != token_ids or block.parent_hash != parent_hash:
                break
            hit_ids.append(block_id)
            parent_hash = block_hash
        return hit_ids

    # Growth of a running sequence

    def can_append(self, seq: Sequence) -> bool:
        """Whether `append(seq)` would find enough blocks (new tail blocks plus copies-on-write)."""
        return self.num_blocks_needed_to_append([seq]) <= len(self._free_ids)

    def num_blocks_needed_to_append(self, seqs: Iterable[Sequence]) -> int:
        """Free blocks that `append` of each of `seqs`, in turn, would take.

        Counts tail blocks for new tokens, and copies of shared blocks the sequences write into: of
        `w` writers of a block held `r` times, min(w, r - 1) copy it (the last holder writes in place).
        """
        num_new = 0
        num_writers: Counter[int] = Counter()
        for seq in seqs:
            num_new += max(0, self.num_blocks_for(seq.num_tokens) - len(seq.block_table))
            for block_id in self._written_block_ids(seq):
                if self._blocks[block_id].ref_count > 1:
                    num_writers[block_id] += 1
        num_copies = sum(min(count, self._blocks[block_id].ref_count - 1) for block_id, count in num_writers.items())
        return num_new + num_copies

    def append(self, seq: Sequence) -> list[tuple[int, int]]:
        """Make `seq`'s table cover all its tokens, with every block the next forward writes owned by it alone.

        Returns:
            (source, destination) block pairs the model runner must copy before the forward pass
            (copy-on-write of blocks shared with other sequences).

        Raises:
            EngineError: the pool is short (check can_append first).
        """
        if not self.can_append(seq):
            raise EngineError(f"not enough free KV blocks to extend sequence {seq.seq_id}")
        copy_pairs: list[tuple[int, int]] = []
        first_written = seq.num_cached // self.block_size
        for index in range(first_written, first_written + len(self._written_block_ids(seq))):
            block = self._blocks[seq.block_table[index]]
            if block.ref_count > 1:
                new_block_id = self._take_free_block()
                copy_pairs.append((block.block_id, new_block_id))
                block.ref_count -= 1
                seq.block_table[index] = new_block_id
            elif block.hash is not None:
                self._forget_hash(block)
        while len(seq.block_table) < self.num_blocks_for(seq.num_tokens):
            seq.block_table.append(self._take_free_block())
        return copy_pairs

    def truncate(self, seq: Sequence) -> None:
        """Release the tail blocks `seq`'s tokens no longer reach (the positions of a rejected draft).

        Raises:
            EngineError: `seq.num_cached` is past its tokens (an engine bug).
        """
        if seq.num_cached > seq.num_tokens:
            raise EngineError(f"sequence {seq.seq_id} caches {seq.num_cached} of {seq.num_tokens} tokens")
        num_kept = self.num_blocks_for(seq.num_tokens)
        for block_id in reversed(seq.block_table[num_kept:]):
            self._release(block_id)
        del seq.block_table[num_kept:]

    def _written_block_ids(self, seq: Sequence) -> list[int]:
        """Blocks already in the table that positions [num_cached, num_tokens) fall into."""
        end = min(len(seq.block_table), self.num_blocks_for(seq.num_tokens))
        return seq.block_table[seq.num_cached // self.block_size : end]

    def cache_full_blocks(self, seq: Sequence) -> None:
        """Register `seq`'s full, fully cached blocks for prefix reuse (call after each forward pass)."""
        if not self.enable_prefix_caching:
            return
        num_full = min(seq.num_cached // self.block_size, len(seq.block_table))
        first, parent_hash = num_full, _ROOT_HASH
        while first > 0:
            previous_hash = self._blocks[seq.block_table[first - 1]].hash
            if previous_hash is not None:
                parent_hash = previous_hash
                break
            first -= 1
        # Every block before `first` is keyed (keys are set in order and cleared only where written).
        for index in range(first, num_full):
            block = self._blocks[seq.block_table[index]]
            block.parent_hash = parent_hash
            block.token_ids = tuple(seq.token_ids[index * self.block_size : (index + 1) * self.block_size])
            block.hash = hash((block.parent_hash, block.token_ids))
            self._hash_to_block_id.setdefault(block.hash, block.block_id)
            parent_hash = block.hash

    # Sharing and release

    def fork(self, parent: Sequence, child: Sequence) -> None:
        """Let `child` share all of `parent`'s blocks (copy-on-write happens on the next append)."""
        if child.block_table:
            raise EngineError(f"sequence {child.seq_id} already holds KV blocks")
        for block_id in parent.block_table:
            self._blocks[block_id].ref_count += 1
        child.block_table = list(parent.block_table)
        child.num_cached = parent.num_cached

    def free(self, seq: Sequence) -> None:
        """Release all of `seq`'s blocks; it holds none afterwards and has nothing cached."""
        for block_id in reversed(seq.block_table):
            self._release(block_id)
        seq.block_table = []
        seq.num_cached = 0

    # Pool primitives

    def _take_free_block(self) -> int:
        if not self._free_ids:
            raise EngineError("no free KV block")
        block_id, _ = self._free_ids.popitem(last=False)
        block = self._blocks[block_id]
        if block.hash is not None:
            self._forget_hash(block)
        block.ref_count = 1
        return block_id

    def _acquire(self, block_id: int) -> None:
        block = self._blocks[block_id]
        if block.ref_count == 0:
            del self._free_ids[block_id]
        block.ref_count += 1

    def _release(self, block_id: int) -> None:
        block = self._blocks[block_id]
        block.ref_count -= 1
        if block.ref_count == 0:
            if block.hash is None:
                # Uncached blocks go first in line for reuse; cached ones wait at the back.
                self._free_ids[block_id] = None
                self._free_ids.move_to_end(block_id, last=False)
            else:
                self._free_ids[block_id] = None

    def _forget_hash(self, block: _Block) -> None:
        if block.hash is not None and self._hash_to_block_id.get(block.hash) == block.block_id:
            del self._hash_to_block_id[block.hash]
        block.hash = None
        block.token_ids = ()
