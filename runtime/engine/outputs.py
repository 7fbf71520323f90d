"""What the engine hands back: finished outputs (`RequestOutput`) and per-step streaming updates.

Shapes follow vLLM: a request output holds the prompt and one `CompletionOutput` per completion
(`n` parallel samples or the best beams, best first for beams); the first completion's fields are
reachable on the request output itself, since most requests have exactly one.
"""

from __future__ import annotations

from dataclasses import dataclass

from grammars.errors import StencilError
from runtime.engine.sequence import FinishReason, TokenLogprob


@dataclass(frozen=True)
class Usage:
    """Token counts of a request, OpenAI-style.

    Attributes:
        prompt_tokens: tokens in the prompt (after the chat template).
        completion_tokens: tokens generated across all completions (stop tokens included).
        draft_tokens: tokens drafted by speculative decoding (runtime.engine.speculative).
        accepted_draft_tokens: drafted tokens the model verified (counted in completion_tokens).
    """

    prompt_tokens: int
    completion_tokens: int
    draft_tokens: int = 0
    accepted_draft_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class CompletionOutput:
    """One finished completion.

    Attributes:
        index: position among the request's completions (beams: rank, best first).
        token_ids: generated tokens, a final stop token or EOS included.
        text: decoded completion; excludes EOS, stop tokens and the stop string that ended it.
        finish_reason: why it ended ("stop", "length" or "error").
        cumulative_logprob: sum of the tokens' logprobs when logprobs or beams were asked for, else None.
        logprobs: per token, when `SamplingParams.logprobs` was set, else None.
        error: what went wrong when finish_reason is "error" (a grammars.GrammarError, usually).
    """

    index: int
    token_ids: tuple[int, ...]
    text: str
    finish_reason: FinishReason
    cumulative_logprob: float | None = None
    logprobs: tuple[TokenLogprob, ...] | None = None
    error: StencilError | None = None


@dataclass(frozen=True)
class RequestOutput:
    """The result of one prompt.

    Attributes:
        request_id: the id `add_request` returned.
        prompt_token_ids: the prompt as fed to the model.
        outputs: the completions (at least one).
        usage: token counts.
    """

    request_id: str
    prompt_token_ids: tuple[int, ...]
    outputs: tuple[CompletionOutput, ...]
    usage: Usage

    @property
    def token_ids(self) -> tuple[int, ...]:
        """The first completion's tokens."""
        return self.outputs[0].token_ids

    @property
    def text(self) -> str:
        """The first completion's text."""
        return self.outputs[0].text

    @property
    def finish_reason(self) -> FinishReason:
        """The first completion's finish reason."""
        return self.outputs[0].finish_reason

    @property
    def logprobs(self) -> tuple[TokenLogprob, ...] | None:
        """The first completion's per-token logprobs."""
        return self.outputs[0].logprobs

    @property
    def error(self) -> StencilError | None:
        """The first completion's error, when it finished with "error"."""
        return self.outputs[0].error


@dataclass(frozen=True)
class CompletionDelta:
    """What one completion gained in one step.

    Attributes:
        index: which completion.
        token_ids: tokens generated this step.
        text: text that became final this step (text that may still turn out to start a stop string
            is held back until it is decided).
        finish_reason: set in the step the completion ends.
        logprobs: per token of `token_ids`, when `SamplingParams.logprobs` was set, else None
            (streamed logprobs, as OpenAI-compatible servers send them per chunk).
    """

    index: int
    token_ids: tuple[int, ...]
    text: str
    finish_reason: FinishReason | None = None
    logprobs: tuple[TokenLogprob, ...] | None = None


@dataclass(frozen=True)
class RequestUpdate:
    """One request's progress in one `Engine.step()`.

    Attributes:
        request_id: which request.
        deltas: per completion that changed this step (beam search reports only at the end).
        output: the finished result, set in the step the whole request ends.
    """

    request_id: str
    deltas: tuple[CompletionDelta, ...]
    output: RequestOutput | None = None

    @property
    def is_finished(self) -> bool:
        """Whether this is the request's last update (its output is set)."""
        return self.output is not None

    @property
    def text(self) -> str:
        """Text added to the first completion this step."""
        return "".join(delta.text for delta in self.deltas if delta.index == 0)
