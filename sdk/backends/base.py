"""The backend interface: where a call's messages become tokens.

A backend has one required method, `stream`: take a `BackendRequest` (chat messages, sampling
parameters, the compiled constraint and the output's JSON Schema) and yield the engine's per-step
`runtime.RequestUpdate`s, the last of which carries the finished `runtime.RequestOutput`. The local
backend drives the in-process engine; a remote backend (an OpenAI-compatible server over httpx)
renders the same request as `messages` + `response_format` and maps the server's chunks to the same
updates. Everything above the backend (prompts, parsing, voting, streaming objects, retries) is
shared.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from runtime.engine.constraints import Constraint
from runtime.engine.outputs import RequestUpdate
from runtime.engine.sampling import SamplingParams

__all__ = ["Backend", "BackendRequest"]


@dataclass(frozen=True)
class BackendRequest:
    """One generation request, as every backend receives it.

    Attributes:
        messages: the chat messages ("role", "content"), oldest first; the backend applies the chat
            template (a local backend with the model's tokenizer, a server on its side).
        params: sampling parameters (`n` parallel samples, beams, penalties, ...), already validated.
        constraint: the compiled constraint the completion must follow (None: free text). Local
            backends enforce it token by token.
        json_schema: the output's JSON Schema when the output is JSON, for backends that take a
            schema rather than a grammar (`response_format` of an OpenAI-compatible server).
        output: the caller's `output=` specification (a grammars.Regex / Lark / Choice, a schema,
            a type), for backends that forward grammars in their own terms.
    """

    messages: Sequence[Mapping[str, str]]
    params: SamplingParams
    constraint: Constraint | None = None
    json_schema: Mapping[str, Any] | None = None
    output: Any = None


class Backend(abc.ABC):
    """Turns requests into token streams. Subclasses implement `stream`; `aclose` is optional."""

    #: Whether this backend can time its constraint matcher (a remote server cannot).
    measures_mask_time: bool = True

    @abc.abstractmethod
    def stream(self, request: BackendRequest) -> AsyncIterator[RequestUpdate]:
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

    async def aclose(self) -> None:  # noqa: B027 (optional hook: most backends hold nothing)
        """Release what the backend holds (threads, connections, the model). Default: nothing."""
