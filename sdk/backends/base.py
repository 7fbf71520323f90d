"""The backend interface: where a call's messages become tokens.

A backend has one required method, `stream`: take a `BackendRequest` (chat messages, sampling
parameters and the compiled constraint) and yield the engine's per-step `runtime.RequestUpdate`s, the
last of which carries the finished `runtime.RequestOutput`. The local backend drives the in-process
engine; the remote one asks an OpenAI-compatible server and checks its answers locally; the
scripted one replays texts for tests. Everything above the backend (prompts, parsing,
voting, streaming objects, retries) is shared.

A backend that can score texts (the local engine) also implements `score`, which ranks a closed set
of answers by likelihood (`sdk.choices`); the default says it cannot, and the SDK generates instead.
Two attributes tell the SDK how to prepare a call: `tool_format` (how tools and past calls reach the
prompt) and `enforces_constraints` (whether answers follow the constraint by construction).
"""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from runtime.engine.constraints import Constraint
from runtime.engine.outputs import RequestUpdate, Usage
from runtime.engine.sampling_params import SamplingParams
from sdk.outputs import OutputSpec
from sdk.tools.format import ToolFormat
from sdk.tools.requests import ToolRequest

__all__ = ["Backend", "BackendRequest", "Scores"]


@dataclass(frozen=True)
class BackendRequest:
    """One generation request, as every backend receives it.

    Attributes:
        messages: the chat messages ("role", "content"), oldest first; the backend applies the
            model's chat template.
        params: sampling parameters (`n` parallel samples, beams, penalties, ...), already validated.
        constraint: the compiled constraint the completion must follow (None: free text), enforced
            token by token.
        prompt_token_ids: a raw prompt, fed as is instead of the rendered `messages` (a plain text
            completion, as the server's `/v1/completions` asks for); None renders `messages`.
        template_variables: more variables for the chat template (`{"tools": [...]}` for a model
            whose template has a tool format; see `sdk.tools.tool_prompt`).
        output: the resolved output the answer is a value of (its JSON Schema, regex, choices or
            Lark text): what a backend that cannot enforce `constraint` (a remote server) sends in
            the server's terms, and checks answers against. None: free text.
        reasoning: whether the completion is reasoning, `sdk.reasoning.MARKER`, then the answer; the
            constraint covers the whole, `output` the answer only.
        tools: the tools the completion may call, with the choice (None: no calls); what a backend
            that cannot enforce `constraint` sends in the server's terms. Calls come back as text
            in the call format (`sdk.tools.format`) whatever the backend.
    """

    messages: Sequence[Mapping[str, str]]
    params: SamplingParams
    constraint: Constraint | None = None
    prompt_token_ids: Sequence[int] | None = None
    template_variables: Mapping[str, Any] | None = None
    output: OutputSpec | None = None
    reasoning: bool = False
    tools: ToolRequest | None = None


@dataclass(frozen=True)
class Scores:
    """How likely the model finds each of a set of answer texts, as its reply to some messages.

    Attributes:
        logprobs: per text, in order, the sum of the log-probabilities of its tokens and the end of
            sequence after them (the raw model distribution: no mask, no penalty).
        usage: prompt tokens, and as completion tokens the number of tokens scored (all texts).
    """

    logprobs: tuple[float, ...]
    usage: Usage


class Backend(abc.ABC):
    """Turns requests into token streams. Subclasses implement `stream`; `aclose` is optional.

    Attributes:
        enforces_constraints: whether completions follow `BackendRequest.constraint` by
            construction (True: only validators can reject an answer); a backend that cannot enforce
            it checks answers against `BackendRequest.output` instead, and every output kind may be
            retried.
    """

    enforces_constraints: ClassVar[bool] = True

    @property
    def tool_format(self) -> ToolFormat:
        """How tools and past calls reach the prompt (`sdk.tools.ToolFormat`); default: the generic
        format, which any chat template renders."""
        return ToolFormat.GENERIC

    @abc.abstractmethod
    def stream(self, request: BackendRequest) -> AsyncGenerator[RequestUpdate, None]:
        """Generate, yielding one update per engine step that produced text for this request.

        Validation happens before the first update: a bad message list, a prompt longer than the
        context window or a request the engine cannot hold raises then, with nothing generated.
        Closing the iterator early (a cancelled task, a `break`) must stop the generation and free
        what it holds at once.

        Args:
            request: what to generate.

        Yields:
            `runtime.RequestUpdate`s; the last one has `.output` set (the finished result).

        Raises:
            runtime.RequestError, runtime.PromptTooLongError: the request cannot be served.
            grammars.GrammarError: the constraint cannot build a matcher for this model.
            sdk.ClosedError: the backend was closed.
        """

    async def score(self, messages: Sequence[Mapping[str, str]], texts: Sequence[str]) -> Scores | None:
        """Score each text as the complete reply to `messages`, all in one batch.

        Args:
            messages: the chat messages, as in `BackendRequest.messages`.
            texts: the candidate replies (at least one).

        Returns:
            The scores, or None when this backend cannot score (the default): the caller generates.

        Raises:
            runtime.RequestError, runtime.PromptTooLongError: the scoring cannot be served.
            sdk.ClosedError: the backend was closed.
        """
        return None

    async def aclose(self) -> None:  # noqa: B027 (optional hook: most backends hold nothing)
        """Release what the backend holds (threads, the model). Default: nothing."""
