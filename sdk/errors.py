"""Errors of the SDK, and where the rest of Stencil's errors sit from a caller's point of view.

    StencilError                        root of every Stencil error (grammars.errors; sdk.StencilError)
    ├── GrammarError                    (grammars) a constraint cannot be compiled
    │   ├── UnsupportedSchemaError      a schema keyword Stencil cannot enforce; carries keyword and pointer
    │   └── ...                         GrammarSyntaxError, SchemaError, EmptyLanguageError, ...
    ├── EngineError                     (runtime) model loading and requests the engine cannot serve
    │   └── RequestError                a bad or conflicting control, prompt or message; carries the field
    │       └── PromptTooLongError      the prompt does not fit the context window; carries both numbers
    └── SDKError                        root of the errors raised here
        ├── UnsupportedOutputTypeError  an `output=` that no constraint can express; carries the type
        ├── ClosedError                 a call on an LLM after `close()`
        ├── RemoteError                 a remote server's error reply, or no reply, after the retries;
        │                               carries status_code and error_type
        └── GenerationError             the model ran but gave no value; carries text, reasoning, usage
            ├── IncompleteOutputError   `max_tokens` (or the context window) cut the output short
            ├── ConstraintFailedError   the constraint could not go on (a matcher error mid-generation)
            └── ValidationError         an output that validation rejects (for a remote model, also one
                                        outside the constraint); carries errors()

Every error above is raised before generation starts, except the `GenerationError`s, which describe
what came back, and `RemoteError`, which may also end a stream midway. An `IncompleteOutputError` is
never reported as a validation error and never retried: the same budget would cut the same output
again. Pydantic's `ValidationError` is mapped to ours once, in `sdk.outputs`, with `raise ... from exc`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from grammars.errors import StencilError
from runtime.engine.outputs import Usage

__all__ = [
    "ClosedError",
    "ConstraintFailedError",
    "GenerationError",
    "IncompleteOutputError",
    "RemoteError",
    "SDKError",
    "UnsupportedOutputTypeError",
    "ValidationError",
]


class SDKError(StencilError):
    """Root of the errors the SDK itself raises."""


class UnsupportedOutputTypeError(SDKError):
    """An `output=` argument that is not a type, schema or constraint the SDK can turn into one.

    Attributes:
        output: the offending value.
        reason: why it cannot be used.
    """

    def __init__(self, output: object, reason: str) -> None:
        self.output = output
        self.reason = reason
        super().__init__(f"unsupported output type {output!r}: {reason}")


class ClosedError(SDKError):
    """The LLM was closed; its engine thread and memory are gone."""


class RemoteError(SDKError):
    """A remote model's server answered with an error, or could not be reached, after the retries
    (`sdk.backends.remote`).

    Attributes:
        status_code: the HTTP status (None: no reply, or an error event in the stream).
        error_type: the error envelope's "type" (or "code"), e.g. "invalid_request_error".
        message: what the server said, or what went wrong on the way.
    """

    def __init__(self, message: str, *, status_code: int | None = None, error_type: str | None = None) -> None:
        self.status_code = status_code
        self.error_type = error_type
        self.message = message
        where = f"HTTP {status_code}" if status_code is not None else "no reply"
        super().__init__(f"remote model: {message} ({where}{f', {error_type}' if error_type else ''})")


class GenerationError(SDKError):
    """The model generated, but what came back is not a value of the output type.

    Attributes:
        text: the completion as generated (reasoning included).
        reasoning: the reasoning part when `reasoning=True` was asked for, else None.
        usage: tokens spent, summed over every attempt of the call.
    """

    def __init__(self, message: str, *, text: str, usage: Usage, reasoning: str | None = None) -> None:
        self.text = text
        self.usage = usage
        self.reasoning = reasoning
        super().__init__(message)


class IncompleteOutputError(GenerationError):
    """`max_tokens` (or the model's context window) ended a constrained output, or the reasoning
    before its answer, before it was complete (free text cut short is returned, with
    `Result.finish_reason == "length"`).

    The partial text is in `text`; raise `max_tokens` to get the whole output.
    """


class ConstraintFailedError(GenerationError):
    """The constraint could not go on mid-generation (a matcher budget, or no allowed token).

    The engine's `grammars.GrammarError` is the `__cause__`.
    """


class ValidationError(GenerationError):
    """An output that validation rejects: a Pydantic validator, a field constraint the grammar does not
    express, or (from a remote server, which may ignore the constraint) text outside the constraint.

    Attributes:
        details: Pydantic-style error dicts, each with "type", "loc", "msg" and "input".
    """

    def __init__(
        self, details: Sequence[dict[str, Any]], *, text: str, usage: Usage, reasoning: str | None = None
    ) -> None:
        self.details = tuple(details)
        lines = [f"{len(self.details)} validation error(s):"]
        lines += [
            f"  {_location(d.get('loc', ()))}: {d.get('msg', '')} [type={d.get('type', '')}]" for d in self.details
        ]
        super().__init__("\n".join(lines), text=text, usage=usage, reasoning=reasoning)

    def errors(self) -> list[dict[str, Any]]:
        """The error details (type, loc, msg, input), as Pydantic's `ValidationError.errors()` gives them."""
        return [dict(detail) for detail in self.details]


def _location(loc: Sequence[object]) -> str:
    return ".".join(str(part) for part in loc) or "(root)"
