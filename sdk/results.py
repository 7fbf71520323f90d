"""The result of a call: the typed value with everything known about how it was produced.

`LLM.generate` returns the value alone; `LLM.run` returns this `Result`, for callers that need the
raw text, the token usage, the timings, the reasoning, the vote distribution or the tool calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

from runtime.engine.outputs import Usage
from runtime.engine.sequence import FinishReason
from sdk.voting import Votes

if TYPE_CHECKING:
    from sdk.tools.calls import ToolCall

__all__ = ["Result", "Timings", "add_usage"]

T = TypeVar("T")


@dataclass(frozen=True)
class Timings:
    """Where the time of a call went, in seconds, summed over its attempts.

    Attributes:
        time_to_first_token: from submitting the request until its first token came back (first
            attempt), None when no token was generated.
        total: from the start of the call until the value was ready.
        mask_time: time spent in the constraint matcher (computing token masks and advancing its
            state), summed over the call's sequences; 0.0 for unconstrained output.
    """

    time_to_first_token: float | None
    total: float
    mask_time: float

    @property
    def mask_share(self) -> float | None:
        """`mask_time` as a share of `total` (None when `total` is 0). Several sequences (samples,
        beams) can make it exceed 1: their matchers run one after another inside each step."""
        if self.total <= 0.0:
            return None
        return self.mask_time / self.total


@dataclass(frozen=True)
class Result(Generic[T]):
    """A typed value and how it was produced.

    Attributes:
        value: the output, an instance of the requested type (str for text and grammar outputs).
        text: the completion it was parsed from, reasoning included (with `samples`, the first
            sample that voted for the winner).
        usage: tokens spent, summed over retries and samples.
        timings: time to first token, total time and time in the constraint matcher.
        finish_reason: why the completion of `text` ended: "stop" (end of sequence, a stop token
            or a stop string) or "length" (`max_tokens` or the context window; only free text is
            returned cut, a constrained output cut short raises `IncompleteOutputError`). With
            `samples`, the reason of that first sample voting for the winner; with `retries`, of
            the last attempt.
        reasoning: the free text before the answer when `reasoning=True`, else None.
        votes: the vote distribution when `samples > 1`, else None.
        num_attempts: 1 plus the retries that validation errors used.
        choice_logprobs: for an output that is one of a few texts (Literal, str Enum, Choice,
            bool), the log-probability of each option's text as the whole reply, when the value
            was picked by ranking them (`sdk.choices`); else None.
        tool_calls: the tools the model called (validated `sdk.ToolCall`s; `value` is this list
            too), or an empty list when it answered instead (a call with `tools=`) or had no tools.
    """

    value: T
    text: str
    usage: Usage
    timings: Timings
    finish_reason: FinishReason
    reasoning: str | None = None
    votes: Votes[T] | None = None
    num_attempts: int = 1
    choice_logprobs: dict[str, float] | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)


def add_usage(first: Usage, second: Usage) -> Usage:
    """The token counts of two requests together (retries sum their usage)."""
    return Usage(
        prompt_tokens=first.prompt_tokens + second.prompt_tokens,
        completion_tokens=first.completion_tokens + second.completion_tokens,
        draft_tokens=first.draft_tokens + second.draft_tokens,
        accepted_draft_tokens=first.accepted_draft_tokens + second.accepted_draft_tokens,
    )
