"""OpenAI's error envelope, and the one place Stencil's errors become HTTP statuses.

    {"error": {"message": "...", "type": "invalid_request_error", "param": "temperature", "code": null}}

Clients (the `openai` package, agent frameworks) pick their exception by status: 400
`BadRequestError`, 401 `AuthenticationError`, 404 `NotFoundError`, 413, 429 `RateLimitError`, 503
`InternalServerError` (both retried, after `Retry-After`). A request the server cannot serve as sent is
always a 400 naming the field in `param`; 500 is left to bugs.
"""

from __future__ import annotations

from typing import Any

import grammars
from runtime.errors import CacheBusyError, PromptTooLongError, RequestError
from sdk.errors import ClosedError, UnsupportedOutputTypeError

__all__ = ["APIError", "error_body", "from_stencil_error"]

#: Seconds a client is told to wait before retrying a request refused for load.
RETRY_AFTER_SECONDS = 1


class APIError(Exception):
    """An error answered with OpenAI's envelope.

    Args:
        status: the HTTP status.
        message: what is wrong, for a person.
        error_type: OpenAI's `type` ("invalid_request_error", "authentication_error", ...).
        param: the request field at fault, as a path ("messages[1].content"), or None.
        code: a stable machine-readable slug, or None.
        headers: extra response headers (`Retry-After`).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.param = param
        self.code = code
        self.headers = headers or {}

    @classmethod
    def bad_request(cls, message: str, param: str | None, code: str | None = None) -> APIError:
        """A 400: the request cannot be served as sent."""
        return cls(400, message, param=param, code=code)

    @classmethod
    def overloaded(cls, message: str, status: int = 429) -> APIError:
        """A 429 or 503 with `Retry-After`: try again shortly."""
        error_type = "rate_limit_error" if status == 429 else "service_unavailable"
        return cls(
            status,
            message,
            error_type=error_type,
            code="server_overloaded",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    def body(self) -> dict[str, Any]:
        """The JSON body of the response."""
        return error_body(self.message, self.error_type, self.param, self.code)


def error_body(message: str, error_type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error envelope."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def from_stencil_error(
    exc: Exception, *, constraint_param: str | None = None, prompt_param: str = "messages"
) -> APIError:
    """The HTTP answer to a Stencil error raised while preparing or running a request.

    Args:
        exc: the error.
        constraint_param: the request field the constraint came from (grammar errors name no field).
        prompt_param: the request field that holds the prompt ("messages" or "prompt").

    Returns:
        The `APIError` to answer with; errors that are not the request's fault (a closed engine, a
        busy cache) are 503s.

    Raises:
        TypeError: `exc` is not an error this maps; the caller lets it become a 500.
    """
    if isinstance(exc, PromptTooLongError):
        return APIError(400, f"{prompt_param}: {exc.reason}", param=prompt_param, code="context_length_exceeded")
    if isinstance(exc, RequestError):
        field = "n" if exc.field == "samples" else exc.field  # the backend reports `n` as the SDK's name
        return APIError.bad_request(f"{field}: {exc.reason}", field)
    if isinstance(exc, grammars.UnsupportedSchemaError):
        return APIError.bad_request(
            f"{constraint_param}: the schema cannot be enforced: {exc}", constraint_param, "unsupported_schema"
        )
    if isinstance(exc, grammars.GrammarSyntaxError):
        return APIError.bad_request(f"{constraint_param}: {exc}", constraint_param, "invalid_grammar")
    if isinstance(exc, (grammars.GrammarError, UnsupportedOutputTypeError)):
        return APIError.bad_request(
            f"{constraint_param}: the constraint cannot be enforced: {exc}", constraint_param, "invalid_constraint"
        )
    if isinstance(exc, CacheBusyError):
        return APIError.overloaded(f"the KV cache is busy: {exc}", 503)
    if isinstance(exc, ClosedError):
        return APIError.overloaded("the server is shutting down", 503)
    raise TypeError(f"no HTTP mapping for {type(exc).__name__}") from exc
