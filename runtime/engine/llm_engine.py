"""The engine: requests in, tokens out, one batched forward pass per step.

`Engine` ties the control plane (scheduler and block manager, which decide what runs) to the device
plane (`ModelRunner`, which runs it) and to sampling. Two ways in:

- `generate(prompts, params)`: run a batch of prompts to completion (all of them batched together);
- `add_request` / `step` / `abort_request`: the step-level API the async SDK drives from a background
  thread while other threads add and abort requests; `stream` wraps it for one request.

Thread safety: `add_request`, `abort_request` and `has_unfinished_requests` may be called from any
thread while one thread calls `step`. Engine state is guarded by a lock that `step` holds only to
schedule and to commit a step's results: not during the forward pass, nor while it computes the
constraint masks (each under a time budget, `max_mask_seconds`), so those calls never wait on a slow
model or grammar; an abort that lands meanwhile frees the request's blocks at once, and `step` drops
the request's results. `generate` and `stream` call `step` themselves: do not use them while another
thread drives `step` (the updates of one would go to the other).

Failure isolation: every constraint matcher runs behind a `GuardedMatcher`, so an exception from one
constraint (a recursion limit, a bug) or a mask past its budget ends that request alone with
`finish_reason="error"` and a typed `GrammarError`; the other requests of the batch go on.

Runaway guard: a constrained sequence whose completion ends in a loop samples from its matcher's
closing mask until it no longer does (`SamplingParams.runaway_guard`; see runtime.engine.runaway).

Speculative decoding (`speculative=SpeculativeConfig(...)`): in decode steps each sequence may carry a
draft (the text its constraint forces, prompt lookup, a draft model), made and checked against its
constraint outside the lock and verified in the same forward pass; greedy output is unchanged and
sampling keeps its distribution (see runtime.engine.speculative). A draft model's KV of finished and
aborted sequences is freed at the end of each step, or at the abort when no step is running.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from collections.abc import Sequence as SequenceOf
from typing import TYPE_CHECKING, Any, cast

import torch

from grammars.errors import GrammarError, StencilError
from runtime.engine.beam import BeamSearch, BeamState
from runtime.engine.block_manager import BlockManager
from runtime.engine.completion import accept_token, request_output, take_delta
from runtime.engine.constraints import Constraint
from runtime.engine.draft_model import draft_model_for
from runtime.engine.draft_walk import Draft
from runtime.engine.guarded_matcher import guarded_matcher
from runtime.engine.outputs import CompletionDelta, RequestOutput, RequestUpdate
from runtime.engine.runaway import closing_mask, ends_in_loop
from runtime.engine.sampler import apply_constraint_masks, apply_penalties, sample_tokens, token_logprobs
from runtime.engine.sampling_params import SamplingParams
from runtime.engine.scheduler import ScheduledBatch, Scheduler
from runtime.engine.scoring import num_blocks_to_score, score_continuations
from runtime.engine.sequence import FinishReason, Request, Sequence, SequenceStatus, TokenLogprob
from runtime.engine.speculative import SpeculativeConfig, Speculator
from runtime.errors import EngineError, PromptTooLongError, RequestError
from runtime.model.runner import ForwardBatch

if TYPE_CHECKING:
    from runtime.config import ModelConfig
    from runtime.model.runner import ModelRunner
    from runtime.tokenizer import Tokenizer

#: A prompt: text (rendered through the chat template as one user message) or token ids (fed as is).
Prompt = str | SequenceOf[int]
#: Wall-clock seconds the engine gives one constraint mask by default: far above a normal mask
#: (milliseconds; a cold grammar's first masks up to about a second), far below a stalled server.
DEFAULT_MAX_MASK_SECONDS = 5.0


class Engine:
    """A continuous-batching generator over one model.

    Args:
        runner: the model runner (its block pool sizes the block manager).
        tokenizer: the model's tokenizer.
        max_num_seqs: most sequences decoded in one step.
        max_num_batched_tokens: most prompt tokens prefilled in one step (longer prompts are chunked).
        max_model_len: context window; None uses the model's `max_position_embeddings`.
        enable_prefix_caching: reuse the KV of full prompt blocks across requests.
        max_mask_seconds: wall-clock budget of one constraint mask; a request whose mask runs past it
            ends with finish_reason "error" and a `grammars.ConstraintLimitError`. None: no limit.
        speculative: draft sources for speculative decoding and jump-forward; None: off.

    Raises:
        RequestError: limits that cannot work together, or a draft model that cannot draft for this
            one (another vocabulary; field names the argument).
        ModelLoadError: the draft model cannot be loaded.
    """

    def __init__(
        self,
        runner: ModelRunner,
        tokenizer: Tokenizer,
        *,
        max_num_seqs: int = 32,
        max_num_batched_tokens: int = 4096,
        max_model_len: int | None = None,
        enable_prefix_caching: bool = True,
        max_mask_seconds: float | None = DEFAULT_MAX_MASK_SECONDS,
        speculative: SpeculativeConfig | None = None,
    ) -> None:
        self.runner = runner
        self.tokenizer = tokenizer
        self.config: ModelConfig = runner.config
        self.max_model_len = context_window(self.config, max_model_len)
        for name, value in (("max_num_seqs", max_num_seqs), ("max_num_batched_tokens", max_num_batched_tokens)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise RequestError(f"must be an int >= 1, got {value!r}", name)
        if max_num_batched_tokens < max_num_seqs:
            raise RequestError(f"must be >= max_num_seqs ({max_num_seqs})", "max_num_batched_tokens")
        if max_mask_seconds is not None and (
            isinstance(max_mask_seconds, bool)
            or not isinstance(max_mask_seconds, (int, float))
            or max_mask_seconds <= 0
        ):
            raise RequestError(f"must be None or a number of seconds > 0, got {max_mask_seconds!r}", "max_mask_seconds")
        self.max_mask_seconds = max_mask_seconds
        if speculative is not None and not isinstance(speculative, SpeculativeConfig):
            raise RequestError(f"expected a SpeculativeConfig or None, got {speculative!r}", "speculative")
        self._eos_token_ids = frozenset(tokenizer.eos_token_ids)
        self.speculator = None
        if speculative is not None:
            draft_model = draft_model_for(speculative, runner, tokenizer)
            self.speculator = Speculator(speculative, tokenizer, self._eos_token_ids, draft_model)
        self.block_manager = BlockManager(
            runner.num_blocks,
            runner.block_size,
            bytes_per_token=runner.bytes_per_token,
            enable_prefix_caching=enable_prefix_caching,
        )
        self.scheduler = Scheduler(
            self.block_manager, max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens
        )
        self._beam_search = BeamSearch(
            fork_seq=self._fork_seq, drop_seq=self._drop_seq, max_model_len=self.max_model_len
        )
        self._requests: dict[str, Request] = {}
        self._request_of_seq: dict[int, Request] = {}
        self._seq_ids = itertools.count()
        self._request_ids = itertools.count()
        self._lock = threading.Lock()
        self._step_lock = threading.Lock()
        # Building the vocabulary takes seconds: not under `_lock`, which aborts wait on.
        self._vocabulary_lock = threading.Lock()
        self._vocabulary: Any = None

    @property
    def vocabulary(self) -> Any:
        """The grammars.Vocabulary of this model (as wide as its logits), built on first use."""
        with self._vocabulary_lock:
            if self._vocabulary is None:
                import grammars  # imported on use: unconstrained generation needs no grammar engine

                self._vocabulary = grammars.Vocabulary.from_tokenizer(self.tokenizer, size=self.config.vocab_size)
            return self._vocabulary

    # Request intake

    def add_request(
        self,
        prompt: Prompt,
        params: SamplingParams | None = None,
        constraint: Constraint | None = None,
        *,
        request_id: str | None = None,
    ) -> str:
        """Queue a prompt for generation; it joins the running batch at the next step.

        Args:
            prompt: text (chat-templated as one user message) or token ids.
            params: sampling parameters; None uses `SamplingParams()`.
            constraint: a compiled grammar the completion must follow (see runtime.engine.constraints).
            request_id: a caller-chosen id; None assigns one.

        Returns:
            The request id, which `step` updates and `abort_request` use.

        Raises:
            RequestError: bad prompt, parameters or id (field names it).
            PromptTooLongError: the prompt does not fit the context window.
            GrammarError: the constraint cannot build a matcher for this vocabulary (any other
                exception of the constraint's is raised as `grammars.MatcherFailedError`).
        """
        request = self._prepare(prompt, params, constraint, request_id, field="prompt")
        with self._lock:
            self._enqueue(request)
        return request.request_id

    def _prepare(
        self,
        prompt: Prompt,
        params: SamplingParams | None,
        constraint: Constraint | None,
        request_id: str | None,
        *,
        field: str,
    ) -> Request:
        """Validate a request and build its first sequence, without touching engine state."""
        params = SamplingParams() if params is None else params
        if not isinstance(params, SamplingParams):
            raise RequestError(f"expected SamplingParams, got {type(params).__name__}", "params")
        prompt_ids = self._prompt_token_ids(prompt, field)
        if len(prompt_ids) >= self.max_model_len:
            raise PromptTooLongError(len(prompt_ids), self.max_model_len, field)
        self._check_fits_pool(len(prompt_ids), params)
        if any(token_id >= self.config.vocab_size for token_id in params.stop_token_ids):
            raise RequestError(f"ids must be below the vocabulary size {self.config.vocab_size}", "stop_token_ids")
        if constraint is not None and params.ignore_eos:
            raise RequestError("a constrained completion ends where its grammar accepts", "ignore_eos")
        matcher = (
            guarded_matcher(constraint, self.vocabulary, self.max_mask_seconds) if constraint is not None else None
        )
        seq = Sequence(
            seq_id=next(self._seq_ids),
            token_ids=list(prompt_ids),
            num_prompt_tokens=len(prompt_ids),
            matcher=matcher,
            generator=_generator(params.seed, 0),
            logprobs=[] if params.logprobs is not None else None,
            detokenizer=self.tokenizer.detokenize_stream(skip_special_tokens=True),
        )
        request = Request(
            request_id=request_id if request_id is not None else f"req-{next(self._request_ids)}",
            params=params,
            prompt_token_ids=list(prompt_ids),
            seqs=[seq],
        )
        if params.use_beam_search:
            request.beam_state = BeamState(num_beams=params.num_beams, length_penalty=params.length_penalty)
        return request

    def _prompt_token_ids(self, prompt: Prompt, field: str) -> list[int]:
        if isinstance(prompt, str):
            messages = [{"role": "user", "content": prompt}]
            try:
                # tokenize=True renders to ids; context_window refuses a huge prompt before encoding it.
                token_ids = cast(
                    list[int],
                    self.tokenizer.apply_chat_template(messages, tokenize=True, context_window=self.max_model_len),
                )
            except PromptTooLongError as exc:  # the tokenizer does not know which prompt this is
                raise PromptTooLongError(
                    exc.num_prompt_tokens, exc.max_context_tokens, field, is_lower_bound=exc.is_lower_bound
                ) from None
        elif isinstance(prompt, (list, tuple)):
            token_ids = self.tokenizer.check_token_ids(prompt, field)
        else:
            raise RequestError(f"expected a str or a list of token ids, got {type(prompt).__name__}", field)
        if not token_ids:
            raise RequestError("is empty", field)
        return list(token_ids)

    def _check_fits_pool(self, num_prompt_tokens: int, params: SamplingParams) -> None:
        """Admission control: a request must fit one batch and the block pool on its own, or it could
        never finish."""
        num_seqs = max(params.n, params.num_beams)
        if num_seqs > self.scheduler.max_num_seqs:
            field = "n" if params.n >= params.num_beams else "num_beams"
            raise RequestError(f"{num_seqs} sequences exceed max_num_seqs={self.scheduler.max_num_seqs}", field)
        max_len = min(num_prompt_tokens + params.max_tokens, self.max_model_len)
        num_needed = num_seqs * self.block_manager.num_blocks_for(max_len)
        if num_needed > self.block_manager.num_blocks:
            raise RequestError(
                f"{num_seqs} sequence(s) of up to {max_len} tokens need {num_needed} KV blocks; "
                f"the cache has {self.block_manager.num_blocks}",
                "max_tokens",
            )

    def _enqueue(self, request: Request) -> None:
        if request.request_id in self._requests:
            raise RequestError(f"{request.request_id!r} is already in use", "request_id")
        self._requests[request.request_id] = request
        self._request_of_seq[request.seqs[0].seq_id] = request
        self.scheduler.add(request)

    def abort_request(self, request_id: str) -> bool:
        """Stop a request now and free its KV blocks; it gets no further updates.

        Returns:
            Whether the request was live (False for unknown or already finished ids).
        """
        with self._lock:
            request = self._requests.pop(request_id, None)
            if request is None:
                return False
            for seq in request.seqs:
                seq.status = SequenceStatus.FINISHED
                self._request_of_seq.pop(seq.seq_id, None)
            self.scheduler.remove(request)
            if self.speculator is not None and self._step_lock.acquire(blocking=False):
                try:  # no step is running: free the draft KV now (else the running step does)
                    self.speculator.release_finished()
                finally:
                    self._step_lock.release()
            return True

    def has_unfinished_requests(self) -> bool:
        """Whether any request is waiting or running."""
        with self._lock:
            return self.scheduler.has_unfinished()

    # Scoring

    def score(self, prompt: Prompt, continuations: SequenceOf[SequenceOf[int]]) -> list[float]:
        """Log-probability of each continuation after `prompt` under the raw model distribution.

        Ranks a closed set of answers by their whole-sequence likelihood (see runtime.engine.scoring):
        the prompt is prefilled once and all continuations run in one batched forward pass. Safe to
        call from any thread while another drives `step`: it waits for the running step to end.

        Args:
            prompt: text (chat-templated as one user message) or token ids, as in `add_request`.
            continuations: non-empty token-id lists (e.g. an option's tokens followed by EOS).

        Returns:
            Per continuation, the sum of its tokens' log-softmax logprobs (no mask, no penalty).

        Raises:
            RequestError: a bad prompt or continuation, or a scoring larger than the block pool.
            PromptTooLongError: the prompt and a continuation do not fit the context window.
            CacheBusyError: the block pool is too busy with running requests to hold the scoring now.
        """
        prompt_ids = self._prompt_token_ids(prompt, "prompt")
        if len(prompt_ids) >= self.max_model_len:
            raise PromptTooLongError(len(prompt_ids), self.max_model_len, "prompt")
        if isinstance(continuations, (str, bytes)) or not isinstance(continuations, SequenceOf) or not continuations:
            raise RequestError("expected a non-empty list of token-id lists", "continuations")
        checked = [
            self.tokenizer.check_token_ids(tokens, f"continuations[{i}]") for i, tokens in enumerate(continuations)
        ]
        for index, tokens in enumerate(checked):
            if not tokens:
                raise RequestError("is empty", f"continuations[{index}]")
        longest = len(prompt_ids) + max(map(len, checked)) - 1  # the last token is scored, never fed
        if longest > self.max_model_len:
            raise PromptTooLongError(
                longest, self.max_model_len, "prompt", hint="That count includes the longest continuation after it."
            )
        num_needed = num_blocks_to_score(self.block_manager, len(prompt_ids), [len(tokens) for tokens in checked])
        if num_needed > self.block_manager.num_blocks:
            raise RequestError(
                f"needs {num_needed} KV blocks, the pool has {self.block_manager.num_blocks}", "continuations"
            )
        with self._step_lock:
            return score_continuations(self.runner, self.block_manager, self._lock, self._seq_ids, prompt_ids, checked)

    # Stepping

    def step(self) -> list[RequestUpdate]:
        """Run one forward pass over the scheduled batch and sample the next tokens.

        Returns:
            One update per request that produced tokens or finished this step (requests that are
            only partway through a chunked prefill, and beam requests until they end, report nothing).
        """
        with self._step_lock:
            with self._lock:
                batch = self.scheduler.schedule()
                if batch is None:
                    if self.scheduler.has_unfinished():
                        # Admission control makes this unreachable; fail loudly rather than spin.
                        raise EngineError("the scheduler cannot make progress on the queued requests")
                    return []
            drafts: dict[int, Draft] = {}
            started = time.perf_counter()  # decode steps are timed: the speculator weighs draft rows by their cost
            if self.speculator is not None and not batch.is_prefill:
                drafts = self._propose_drafts(batch)  # outside the lock: drafts walk the matchers
            with self._lock:
                batch = self._attach_drafts(batch, drafts)  # also leaves out sequences aborted meanwhile
                if self.speculator is not None and not batch.seqs:
                    self.speculator.release_finished()
                if not batch.seqs:
                    return []  # every sequence was aborted while its draft was made
                forward_batch = ForwardBatch(
                    token_ids=[seq.token_ids[seq.num_cached : seq.num_cached + k] for seq, k in _fed(batch)],
                    num_cached=[seq.num_cached for seq in batch.seqs],
                    block_tables=[seq.block_table for seq in batch.seqs],
                    all_logits=bool(drafts),
                    is_prefill=batch.is_prefill,
                )
            if batch.copy_pairs:
                self.runner.copy_blocks(batch.copy_pairs)
            logits = self.runner.forward(forward_batch)  # [B, V] float32; [sum k_i, V] with drafts
            self._compute_masks(batch, drafts)
            # The runner returns inference tensors; sampling edits them in place, so it runs in that mode too.
            with self._lock, torch.inference_mode():
                updates = self._process(batch, logits, drafts)
                if self.speculator is not None:
                    self.speculator.release_finished()  # the sequences that finished or were aborted
                    if not batch.is_prefill:
                        self.speculator.row_cost.observe(logits.shape[0], time.perf_counter() - started)
                return updates

    def _propose_drafts(self, batch: ScheduledBatch) -> dict[int, Draft]:
        """Checked drafts of the decoding sequences, by sequence id (see runtime.engine.speculative)."""
        if self.speculator is None:
            return {}
        candidates = []
        for seq, num_new in _fed(batch):
            request = self._request_of_seq.get(seq.seq_id)  # None: aborted meanwhile
            if request is None or seq.is_finished or num_new != 1 or request.params.use_beam_search:
                continue
            candidates.append((seq, request.params, self._max_remaining_tokens(seq, request.params)))
        return self.speculator.propose_batch(candidates)

    def _attach_drafts(self, batch: ScheduledBatch, drafts: dict[int, Draft]) -> ScheduledBatch:
        """Append each draft to its sequence, with the blocks it needs (a draft the free blocks cannot
        hold is dropped: drafts never preempt), and leave out sequences aborted meanwhile."""
        kept = ScheduledBatch(seqs=[], num_new_tokens=[], copy_pairs=batch.copy_pairs, is_prefill=batch.is_prefill)
        for seq, num_new in _fed(batch):
            if seq.is_finished:
                drafts.pop(seq.seq_id, None)
                continue
            draft = drafts.get(seq.seq_id)
            if draft is not None:
                seq.token_ids.extend(draft.token_ids)
                if self.block_manager.can_append(seq):
                    kept.copy_pairs.extend(self.block_manager.append(seq))
                    num_new += len(draft.token_ids)
                else:
                    del seq.token_ids[-len(draft.token_ids) :]
                    del drafts[seq.seq_id]
            kept.seqs.append(seq)
            kept.num_new_tokens.append(num_new)
        return kept

    def _compute_masks(self, batch: ScheduledBatch, drafts: dict[int, Draft]) -> None:
        """Compute the masks this step samples under, each within the mask budget, before `_process`
        takes the lock (the guarded matchers keep them, and parallel samples fork them). Runs outside
        `_lock`: only this thread touches matchers, and an abort landing meanwhile wastes one mask.
        Drafted sequences have theirs already."""
        for seq, num_new in _fed(batch):
            is_sampled = seq.num_uncached == num_new and seq.seq_id not in drafts
            if seq.matcher is not None and not seq.is_finished and is_sampled:
                request = self._request_of_seq.get(seq.seq_id)  # None: aborted meanwhile
                if request is not None:
                    budget = self._max_remaining_tokens(seq, request.params)
                    if _is_closing(seq, request.params):
                        closing_mask(seq.matcher, budget)
                    else:
                        seq.matcher.mask(max_remaining_tokens=budget)

    def _process(self, batch: ScheduledBatch, logits: torch.Tensor, drafts: dict[int, Draft]) -> list[RequestUpdate]:
        """Commit the fed tokens, then sample for every request whose sequences all have logits
        (drafted sequences verify their drafts instead)."""
        rows: list[int] = []
        seqs: list[Sequence] = []
        stepped: dict[str, tuple[Request, list[Sequence]]] = {}
        ends = list(itertools.accumulate(batch.num_new_tokens))  # with drafts: logits rows end here
        for index, (seq, num_new) in enumerate(_fed(batch)):
            if seq.is_finished:
                continue  # aborted while the forward pass ran
            row = ends[index] - 1 if drafts else index
            draft = drafts.get(seq.seq_id)
            if draft is not None:
                request = self._request_of_seq[seq.seq_id]
                stepped.setdefault(request.request_id, (request, []))[1].append(seq)
                self._commit_draft(request, seq, draft, logits[ends[index] - num_new : ends[index]])
                continue
            seq.num_cached += num_new
            self.block_manager.cache_full_blocks(seq)
            if seq.num_uncached > 0:
                continue  # mid-way through a chunked prefill
            request = self._request_of_seq[seq.seq_id]
            new_seqs = [seq]
            if request.params.n > 1 and not request.is_forked and not request.params.use_beam_search:
                new_seqs = self._fork_samples(request)
            rows.extend([row] * len(new_seqs))
            seqs.extend(new_seqs)
            stepped.setdefault(request.request_id, (request, []))[1].extend(new_seqs)
        if seqs:
            sampled_logits = logits if rows == list(range(logits.shape[0])) else logits[rows]  # [R, V]
            requests = [self._request_of_seq[seq.seq_id] for seq in seqs]
            params = [request.params for request in requests]
            budgets = [self._max_remaining_tokens(seq, p) for seq, p in zip(seqs, params)]
            closing = [_is_closing(seq, p) for seq, p in zip(seqs, params)]
            is_alive = apply_constraint_masks(sampled_logits, seqs, budgets, closing)
            apply_penalties(sampled_logits, seqs, params)
            self._sample(sampled_logits, seqs, requests, is_alive)
            self._step_beams(sampled_logits, seqs, requests, is_alive)
        updates = [self._update(request, request_seqs) for request, request_seqs in stepped.values()]
        return [update for update in updates if update is not None]

    def _commit_draft(self, request: Request, seq: Sequence, draft: Draft, logits: torch.Tensor) -> None:
        """Verify `seq`'s draft against its logits rows [k + 1, V], append what is accepted and the
        token after it through the plain path, and keep the KV of the accepted positions only."""
        if self.speculator is None:
            raise EngineError("a draft without a speculator")
        params = request.params
        num_tokens = seq.num_tokens - len(draft.token_ids)  # before the draft; the last one was fed
        del seq.token_ids[num_tokens:]
        token_ids, processed = self.speculator.verify(logits, seq, params, draft)
        logprobs: list[TokenLogprob | None] = [None] * len(token_ids)
        if params.logprobs is not None:
            logprobs = list(token_logprobs(processed, token_ids, [params.logprobs] * len(token_ids)))
        for token_id, logprob in zip(token_ids, logprobs):
            ending = accept_token(
                seq, token_id, logprob, params, eos_token_ids=self._eos_token_ids, max_model_len=self.max_model_len
            )
            if ending is not None:
                self._finish(request, seq, *ending)
                return
        seq.num_cached = num_tokens + len(token_ids) - 1  # the fed token and the accepted draft tokens
        self.block_manager.truncate(seq)
        self.block_manager.cache_full_blocks(seq)

    def _max_remaining_tokens(self, seq: Sequence, params: SamplingParams) -> int:
        """Tokens `seq` may still produce, the one sampled now included: what its `max_tokens` and
        the context window leave (length-aware masks keep a complete text within it)."""
        return min(params.max_tokens - seq.num_completion_tokens, self.max_model_len - seq.num_tokens)

    def _fork_samples(self, request: Request) -> list[Sequence]:
        """Grow a just-prefilled request into its `n` parallel samples, all sharing the prompt blocks."""
        parent = request.seqs[0]
        for index in range(1, request.params.n):
            child = parent.fork(next(self._seq_ids), index=index, generator=_generator(request.params.seed, index))
            child.detokenizer = self.tokenizer.detokenize_stream(skip_special_tokens=True)
            self._adopt(request, parent, child)
        request.is_forked = True
        return list(request.seqs)

    def _sample(
        self, logits: torch.Tensor, seqs: list[Sequence], requests: list[Request], is_alive: list[bool]
    ) -> None:
        rows = [row for row, request in enumerate(requests) if not request.params.use_beam_search]
        for row in rows:
            if not is_alive[row]:
                self._finish(requests[row], seqs[row], FinishReason.ERROR, _matcher_error(seqs[row]))
        rows = [row for row in rows if is_alive[row]]
        if not rows:
            return
        row_logits = logits if len(rows) == len(seqs) else logits[rows]
        row_params = [requests[row].params for row in rows]
        token_ids = sample_tokens(row_logits, row_params, [seqs[row].generator for row in rows])
        logprobs: list[TokenLogprob | None] = [None] * len(rows)
        wanted = {i: p.logprobs for i, p in enumerate(row_params) if p.logprobs is not None}  # row -> num top
        if wanted:
            computed = token_logprobs(row_logits[list(wanted)], [token_ids[i] for i in wanted], list(wanted.values()))
            for i, computed_logprob in zip(wanted, computed):
                logprobs[i] = computed_logprob
        for row, token_id, logprob in zip(rows, token_ids, logprobs):
            ending = accept_token(
                seqs[row],
                token_id,
                logprob,
                requests[row].params,
                eos_token_ids=self._eos_token_ids,
                max_model_len=self.max_model_len,
            )
            if ending is not None:
                self._finish(requests[row], seqs[row], *ending)

    def _step_beams(
        self, logits: torch.Tensor, seqs: list[Sequence], requests: list[Request], is_alive: list[bool]
    ) -> None:
        beam_rows: dict[str, list[int]] = {}
        for row, request in enumerate(requests):
            if request.params.use_beam_search:
                beam_rows.setdefault(request.request_id, []).append(row)
        for rows in beam_rows.values():
            request = requests[rows[0]]
            stop_ids = set(request.params.stop_token_ids)
            if not request.params.ignore_eos:
                stop_ids |= self._eos_token_ids
            self._beam_search.step(request, logits[rows], [is_alive[row] for row in rows], stop_ids)

    def _finish(self, request: Request, seq: Sequence, reason: FinishReason, error: StencilError | None = None) -> None:
        seq.finish(reason, error)
        self.scheduler.free_seq(seq)
        request.retire(seq)
        self._request_of_seq.pop(seq.seq_id, None)

    # Sequence bookkeeping shared with beam search

    def _adopt(self, request: Request, parent: Sequence, child: Sequence) -> None:
        self.block_manager.fork(parent, child)
        child.status = SequenceStatus.RUNNING
        request.seqs.append(child)
        self._request_of_seq[child.seq_id] = request

    def _fork_seq(self, request: Request, parent: Sequence) -> Sequence:
        child = parent.fork(next(self._seq_ids), index=parent.index)
        self._adopt(request, parent, child)
        return child

    def _drop_seq(self, request: Request, seq: Sequence) -> None:
        seq.status = SequenceStatus.FINISHED
        self.scheduler.free_seq(seq)
        self._request_of_seq.pop(seq.seq_id, None)

    # Outputs

    def _update(self, request: Request, stepped_seqs: list[Sequence]) -> RequestUpdate | None:
        """What `request` gained this step; retires it when its last sequence has ended."""
        deltas: tuple[CompletionDelta, ...] = ()
        if not request.params.use_beam_search:  # beams change until the end: nothing to stream
            deltas = tuple(take_delta(seq, request.params.stop) for seq in stepped_seqs)
        output = None
        if request.is_finished:
            self.scheduler.remove(request)
            self._requests.pop(request.request_id, None)
            output = request_output(request, self.tokenizer)
        if not deltas and output is None:
            return None
        return RequestUpdate(request_id=request.request_id, deltas=deltas, output=output)

    # Whole-batch and streaming front ends

    def generate(
        self,
        prompts: Prompt | SequenceOf[Prompt],
        params: SamplingParams | SequenceOf[SamplingParams] | None = None,
        *,
        constraints: Constraint | SequenceOf[Constraint | None] | None = None,
    ) -> list[RequestOutput]:
        """Generate completions for all prompts, batched together, and wait for every one.

        Args:
            prompts: a list of prompts (text, chat-templated as one user message, or token-id lists);
                a single str is one prompt.
            params: one SamplingParams for all prompts, or one per prompt; None uses the defaults.
            constraints: None, one constraint for every prompt, or one per prompt (None entries allowed).

        Returns:
            One RequestOutput per prompt, in order.

        Raises:
            RequestError: a bad prompt, parameter or list length (field names which); nothing runs then.
            PromptTooLongError: a prompt does not fit the context window.
            GrammarError: a constraint cannot build a matcher for this vocabulary.
        """
        if isinstance(prompts, str):
            prompts = [prompts]
        if not isinstance(prompts, (list, tuple)):
            raise RequestError(f"expected a list of prompts, got {type(prompts).__name__}", "prompts")
        params_list = _per_prompt(params, len(prompts), "params")
        constraint_list = _per_prompt(constraints, len(prompts), "constraints")
        requests = [
            self._prepare(prompt, request_params, constraint, None, field=f"prompts[{index}]")
            for index, (prompt, request_params, constraint) in enumerate(zip(prompts, params_list, constraint_list))
        ]
        with self._lock:
            for request in requests:
                self._enqueue(request)
        outputs: dict[str, RequestOutput] = {}
        try:
            while len(outputs) < len(requests):
                for update in self.step():
                    if update.output is not None:
                        outputs[update.request_id] = update.output
        finally:
            for request in requests:
                if request.request_id not in outputs:
                    self.abort_request(request.request_id)
        return [outputs[request.request_id] for request in requests]

    def stream(
        self, prompt: Prompt, params: SamplingParams | None = None, *, constraint: Constraint | None = None
    ) -> Iterator[RequestUpdate]:
        """Generate one completion, yielding each step's update as it comes (the last carries `.output`).

        Closing the iterator early aborts the request and frees its blocks.

        Raises:
            The errors of `add_request`.
        """
        request_id = self.add_request(prompt, params, constraint)
        try:
            while True:
                for update in self.step():
                    if update.request_id == request_id:
                        yield update
                        if update.is_finished:
                            return
        finally:
            self.abort_request(request_id)


def context_window(config: ModelConfig, max_model_len: int | None) -> int:
    """The engine's context window: `max_model_len`, or the model's `max_position_embeddings` when None.

    Raises:
        RequestError: a window outside (1, max_position_embeddings] (field "max_model_len").
    """
    window = config.max_position_embeddings if max_model_len is None else max_model_len
    if isinstance(window, bool) or not isinstance(window, int) or not 1 < window <= config.max_position_embeddings:
        raise RequestError(f"must be an int in (1, {config.max_position_embeddings}], got {window!r}", "max_model_len")
    return window


def _fed(batch: ScheduledBatch) -> Iterator[tuple[Sequence, int]]:
    return zip(batch.seqs, batch.num_new_tokens)


def _is_closing(seq: Sequence, params: SamplingParams) -> bool:
    """Whether the runaway guard steers `seq` this step: it is constrained, the request keeps the
    guard on, and its completion ends in a loop (see runtime.engine.runaway)."""
    return seq.matcher is not None and params.runaway_guard and ends_in_loop(seq.token_ids, seq.num_prompt_tokens)


def _generator(seed: int | None, index: int) -> torch.Generator | None:
    """The random stream of completion `index` of a seeded request (None: use the global stream)."""
    if seed is None:
        return None
    # Mixing the index in keeps sample i of seed s apart from sample 0 of seed s + i.
    return torch.Generator().manual_seed(hash((seed, index)) & 0xFFFF_FFFF_FFFF_FFFF)


def _matcher_error(seq: Sequence) -> GrammarError:
    if seq.matcher is not None and seq.matcher.error is not None:
        return seq.matcher.error
    return GrammarError("the constraint allows no token here")


def _per_prompt(value: Any, num_prompts: int, field: str) -> list[Any]:
    """Broadcast one value to every prompt, or check a per-prompt list's length."""
    if isinstance(value, (list, tuple)):
        if len(value) != num_prompts:
            raise RequestError(f"has {len(value)} entries for {num_prompts} prompts", field)
        return list(value)
    return [value] * num_prompts
