"""Request bodies of the OpenAI-compatible endpoints, and their sampling parameters.

The bodies are Pydantic models in strict mode (no "0.5" for a number): a field of the wrong type is a
400 whose `param` is the field's path ("messages[0].role"). Fields no model declares are ignored
with a warning in the log, as OpenAI-compatible servers do, so a client that sends vendor extras
still works. Constraint fields are declared here with type `Any` and checked by `sdk.server.dialects`,
which honours or rejects each of them, never ignores one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, TypeVar

import pydantic
from pydantic import BaseModel, ConfigDict

from runtime.engine.sampling_params import SamplingParams
from runtime.errors import RequestError
from sdk.options import DEFAULT_SAMPLES_TEMPERATURE
from sdk.server.errors import APIError

__all__ = [
    "ChatCompletionRequest",
    "CompletionRequest",
    "StreamOptions",
    "chat_num_logprobs",
    "chat_max_tokens",
    "parse_body",
    "sampling_params",
]

logger = logging.getLogger("stencil.server")

#: vLLM's "no top-k" values (its top_k=-1 is common in clients written for it).
_TOP_K_OFF = (-1, 0)


class StreamOptions(BaseModel):
    """`stream_options`: `include_usage` adds a last chunk with the usage and no choices."""

    model_config = ConfigDict(strict=True, extra="forbid")

    include_usage: bool | None = None


class _GenerationRequest(BaseModel):
    """What chat and text completions share: the model, sampling controls and constraint fields."""

    model_config = ConfigDict(strict=True, extra="allow")

    model: str
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    seed: int | None = None
    n: int | None = None
    stop: str | list[str] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    user: str | None = None
    # Constraint fields, every dialect (see sdk.server.dialects); typed there, with their own errors.
    response_format: Any = None
    json_schema: Any = None
    grammar: Any = None
    structured_outputs: Any = None
    guided_json: Any = None
    guided_regex: Any = None
    guided_choice: Any = None
    guided_grammar: Any = None
    guided_whitespace_pattern: Any = None
    # vLLM's choice of constraint engine: there is one here, so it changes nothing.
    guided_decoding_backend: str | None = None

    @property
    def is_streaming(self) -> bool:
        return bool(self.stream)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_GenerationRequest):
    """The body of `POST /v1/chat/completions`."""

    messages: list[dict[str, Any]]
    max_completion_tokens: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None


class CompletionRequest(_GenerationRequest):
    """The body of `POST /v1/completions`: one prompt, as text or token ids."""

    prompt: str | list[int]
    echo: bool | None = None
    logprobs: int | None = None


_Request = TypeVar("_Request", bound=_GenerationRequest)


def parse_body(model: type[_Request], body: object) -> _Request:
    """Validate a decoded JSON body; warn about the fields nobody reads.

    Raises:
        APIError: a 400 naming the first invalid field.
    """
    if not isinstance(body, Mapping):
        raise APIError.bad_request("the request body must be a JSON object", None)
    try:
        request = model.model_validate(body)
    except pydantic.ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        param = _path(error["loc"])
        raise APIError.bad_request(f"{param}: {error['msg']}", param) from exc
    if request.model_extra:
        logger.warning("ignoring unknown request field(s): %s", ", ".join(sorted(request.model_extra)))
    return request


def _path(loc: tuple[int | str, ...]) -> str:
    """A Pydantic error location as a field path, without the union members' tags (`str`, `list[str]`)."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not _is_type_tag(part):
            path += f".{part}" if path else part
    return path


def _is_type_tag(part: str) -> bool:
    """Whether a location part names a union member's type rather than a field (fields are snake_case)."""
    return part in _SCALAR_TAGS or "[" in part or part[:1].isupper()


_SCALAR_TAGS = frozenset({"str", "int", "float", "bool", "none"})


def sampling_params(
    request: ChatCompletionRequest | CompletionRequest,
    *,
    max_tokens: int | None,
    default_max_tokens: int,
    logprobs: int | None,
    is_constrained: bool,
) -> SamplingParams:
    """The engine's sampling parameters of a request.

    Greedy unless a temperature is given (Stencil's one sampling policy), except that `n > 1` samples
    at `sdk.options.DEFAULT_SAMPLES_TEMPERATURE`, since n greedy copies would be identical.

    Args:
        request: the parsed body.
        max_tokens: the completion budget the request asks for (None: `default_max_tokens`).
        default_max_tokens: the budget of a request that sets none (the context window).
        logprobs: alternatives to report per token (None: no logprobs).
        is_constrained: whether a constraint ends the output (then a stop string, which would cut it, is refused).

    Raises:
        APIError: a 400 naming the out-of-range or conflicting field.
    """
    stop = (request.stop,) if isinstance(request.stop, str) else tuple(request.stop or ())
    if stop and is_constrained:
        raise APIError.bad_request("stop: a stop string would cut a constrained output; the constraint ends it", "stop")
    n = 1 if request.n is None else request.n
    temperature = request.temperature
    if temperature is None:
        temperature = DEFAULT_SAMPLES_TEMPERATURE if n > 1 else 0.0
    values: dict[str, Any] = {
        "max_tokens": default_max_tokens if max_tokens is None else max_tokens,
        "temperature": temperature,
        "top_k": None if request.top_k in _TOP_K_OFF else request.top_k,
        "top_p": request.top_p,
        "min_p": request.min_p,
        "seed": request.seed,
        "stop": stop,
        "presence_penalty": request.presence_penalty,
        "frequency_penalty": request.frequency_penalty,
        "repetition_penalty": request.repetition_penalty,
        "logprobs": logprobs,
        "n": n,
    }
    try:
        return SamplingParams(**{name: value for name, value in values.items() if value is not None})
    except RequestError as exc:
        raise APIError.bad_request(f"{exc.field}: {exc.reason}", exc.field) from exc


def chat_num_logprobs(request: ChatCompletionRequest) -> int | None:
    """How many alternatives a chat request wants per token (None: no logprobs).

    Raises:
        APIError: `top_logprobs` without `logprobs: true` (OpenAI's rule).
    """
    if not request.logprobs:
        if request.top_logprobs is not None:
            raise APIError.bad_request("top_logprobs: requires logprobs to be true", "top_logprobs")
        return None
    return 0 if request.top_logprobs is None else request.top_logprobs


def chat_max_tokens(request: ChatCompletionRequest) -> int | None:
    """`max_completion_tokens` (OpenAI's current name), else the older `max_tokens`.

    Raises:
        APIError: both given, with different values.
    """
    if request.max_completion_tokens is None:
        return request.max_tokens
    if request.max_tokens is not None and request.max_tokens != request.max_completion_tokens:
        raise APIError.bad_request("max_tokens: conflicts with max_completion_tokens; send one of them", "max_tokens")
    return request.max_completion_tokens
