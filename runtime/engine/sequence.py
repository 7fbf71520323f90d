"""Sequences and requests: the units of state the scheduler moves and the block manager pages.

A `Sequence` is one token stream (prompt + completion) with its block table and per-sequence sampling
state (random generator, constraint matcher, logprobs). A `Request` is what a caller submitted: one
prompt, one `SamplingParams`, and the sequences it grew into (one; `n` parallel samples; or beams).
Scheduling, preemption and freeing act on whole requests, so the sequences of a request always step
together (beam search needs every beam's logits in the same step).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from grammars.errors import StencilError
    from runtime.engine.beam import BeamState
    from runtime.engine.constraints import TokenMatcher
    from runtime.engine.sampling_params import SamplingParams
    from runtime.tokenizer import DetokenizeStream


class SequenceStatus(enum.Enum):
    """Where a sequence is in its life: queued for (re)prefill, being decoded, or done."""

    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


class FinishReason(str, enum.Enum):
    """Why a completion ended; compares equal to the plain strings "stop", "length" and "error"."""

    #: EOS (with the constraint accepting), a stop token id or a stop string.
    STOP = "stop"
    #: `max_tokens` completion tokens, or the model's context window, reached.
    LENGTH = "length"
    #: The constraint could not go on (matcher error or no allowed token); `error` says why.
    ERROR = "error"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class TokenLogprob:
    """Log-probability of one generated token, and optionally the most likely alternatives.

    Attributes:
        token_id: the generated token.
        logprob: its log-probability under the processed distribution (see runtime.engine.sampler).
        top_logprobs: the `SamplingParams.logprobs` most likely (token_id, logprob) pairs, best first.
    """

    token_id: int
    logprob: float
    top_logprobs: tuple[tuple[int, float], ...] = ()


@dataclass(eq=False)
class Sequence:
    """One token stream: its tokens, how many of them sit in the KV cache, and its sampling state.

    Invariants: `num_cached <= len(token_ids)`; `block_table` covers at least positions
    [0, num_cached); the tokens `token_ids[num_cached:]` are what the next forward pass feeds.
    """

    seq_id: int
    token_ids: list[int]
    num_prompt_tokens: int
    #: Which completion of its request this is (parallel samples keep their index for life).
    index: int = 0
    num_cached: int = 0
    block_table: list[int] = field(default_factory=list)
    status: SequenceStatus = SequenceStatus.WAITING
    matcher: TokenMatcher | None = None
    generator: torch.Generator | None = None
    #: Sum of the chosen tokens' logprobs; tracked when beams or logprobs need it.
    cumulative_logprob: float = 0.0
    logprobs: list[TokenLogprob] | None = None
    finish_reason: FinishReason | None = None
    error: StencilError | None = None
    #: Incremental decoder of the completion, set by the engine.
    detokenizer: DetokenizeStream | None = None
    #: Completion text decoded so far (stop strings already cut off) and how much of it was streamed.
    text: str = ""
    num_text_emitted: int = 0
    num_tokens_emitted: int = 0
    #: Speculative decoding (runtime.engine.speculative): draft tokens proposed and accepted so far.
    num_draft_tokens: int = 0
    num_accepted_draft_tokens: int = 0

    @property
    def num_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return len(self.token_ids)

    @property
    def num_completion_tokens(self) -> int:
        """Tokens generated so far."""
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def completion_token_ids(self) -> list[int]:
        """The generated tokens (a copy)."""
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def num_uncached(self) -> int:
        """Tokens the next forward pass must feed (the prompt at first, then the last sampled token)."""
        return len(self.token_ids) - self.num_cached

    @property
    def is_finished(self) -> bool:
        """Whether the sequence has ended (or was aborted) and holds no blocks any more."""
        return self.status is SequenceStatus.FINISHED

    def append_token(self, token_id: int) -> None:
        """Extend the stream by a sampled token; its KV is written by the next forward pass."""
        self.token_ids.append(token_id)

    def finish(self, reason: FinishReason, error: StencilError | None = None) -> None:
        """Mark the sequence ended, with why (and, for "error", what went wrong)."""
        self.status = SequenceStatus.FINISHED
        self.finish_reason = reason
        self.error = error

    def fork(self, seq_id: int, *, index: int, generator: torch.Generator | None = None) -> Sequence:
        """A copy sharing nothing mutable (the block manager shares the KV blocks by refcount).

        The detokenizer is not copied: the engine forks before any completion text exists (parallel
        samples) or decodes at the end (beams).

        Args:
            seq_id: id of the new sequence.
            index: its completion index.
            generator: the child's random generator (parallel samples need distinct streams).
        """
        return Sequence(
            seq_id=seq_id,
            token_ids=list(self.token_ids),
            num_prompt_tokens=self.num_prompt_tokens,
            index=index,
            num_cached=self.num_cached,
            status=self.status,
            matcher=self.matcher.fork() if self.matcher is not None else None,
            generator=generator,
            cumulative_logprob=self.cumulative_logprob,
            logprobs=list(self.logprobs) if self.logprobs is not None else None,
            text=self.text,
            num_text_emitted=self.num_text_emitted,
            num_tokens_emitted=self.num_tokens_emitted,
        )


@dataclass(eq=False)
class Request:
    """A submitted prompt with its parameters and the sequences it grew into.

    `seqs` holds the live sequences in completion order; finished ones move to `finished_seqs`.
    """

    request_id: str
    params: SamplingParams
    prompt_token_ids: list[int]
    seqs: list[Sequence]
    finished_seqs: list[Sequence] = field(default_factory=list)
    #: Beam-search bookkeeping when `params.num_beams > 1`.
    beam_state: BeamState | None = None
    #: Whether the `n` parallel samples have been forked from the first sequence yet.
    is_forked: bool = False

    @property
    def is_finished(self) -> bool:
        """Whether every sequence of the request has ended."""
        return not self.seqs

    @property
    def num_prompt_tokens(self) -> int:
        """Tokens in the prompt."""
        return len(self.prompt_token_ids)

    def retire(self, seq: Sequence) -> None:
        """Move a finished sequence out of the live list."""
        self.seqs.remove(seq)
        self.finished_seqs.append(seq)
