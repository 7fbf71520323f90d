"""`POST /v1/completions`: a raw prompt (no chat template) continued, whole or streamed.

The prompt is text (tokenized as is, special-token text read as the tokens it spells, as vLLM does)
or token ids. `echo` puts the prompt in front of the completion text; prompt logprobs are not
computed, so `echo` with `logprobs` is refused rather than answered without them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from runtime.engine.outputs import RequestOutput, RequestUpdate
from runtime.errors import RequestError
from sdk.backends.base import BackendRequest
from sdk.server.dialects import compile_constraint, find_constraint
from sdk.server.errors import APIError, from_stencil_error
from sdk.server.logprobs import completion_logprobs
from sdk.server.requests import CompletionRequest, sampling_params
from sdk.server.service import Service, usage_body
from sdk.server.sse import DONE, sse_event

__all__ = ["PreparedCompletion", "complete_text", "prepare_completion", "stream_completion"]


@dataclass(frozen=True)
class PreparedCompletion:
    """A validated completion request.

    Attributes:
        request: the parsed body.
        backend_request: the prompt's token ids, params and constraint.
        constraint_param: the field the constraint came from, None without one.
        prompt_text: the prompt as text (what `echo` repeats).
    """

    request: CompletionRequest
    backend_request: BackendRequest
    constraint_param: str | None
    prompt_text: str
    completion_id: str = field(default_factory=lambda: f"cmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def echoed(self) -> str:
        """The text put before each completion: the prompt with `echo`, else nothing."""
        return self.prompt_text if self.request.echo else ""


async def prepare_completion(service: Service, request: CompletionRequest) -> PreparedCompletion:
    """Check a completion request and build what the engine runs.

    Raises:
        APIError: 404 for another model; 400 for anything malformed, unenforceable or conflicting.
    """
    service.check_model(request.model)
    if request.echo and request.logprobs is not None:
        raise APIError.bad_request("echo: prompt logprobs are not computed; drop echo or logprobs", "echo")
    found = find_constraint(request)
    constraint = await compile_constraint(found) if found is not None else None
    tokenizer = service.engine.tokenizer
    if isinstance(request.prompt, str):
        if not request.prompt:
            raise APIError.bad_request("prompt: is empty", "prompt")
        # BOS and the like where the model's tokenizer adds them (Gemma needs BOS), as vLLM does.
        prompt_text, prompt_ids = request.prompt, tokenizer.encode(request.prompt, add_special_tokens=True)
    else:
        try:
            prompt_ids = tokenizer.check_token_ids(request.prompt, "prompt")
        except RequestError as exc:
            raise from_stencil_error(exc, prompt_param="prompt") from exc
        prompt_text = tokenizer.decode(prompt_ids) if request.echo else ""
    params = sampling_params(
        request,
        max_tokens=request.max_tokens,
        default_max_tokens=service.engine.max_model_len,
        logprobs=request.logprobs,
        is_constrained=constraint is not None,
    )
    backend_request = BackendRequest(messages=(), params=params, constraint=constraint, prompt_token_ids=prompt_ids)
    return PreparedCompletion(request, backend_request, found.param if found else None, prompt_text)


async def complete_text(service: Service, completion: PreparedCompletion, arrived: float) -> dict[str, Any]:
    """The whole `text_completion` object of a request.

    Raises:
        APIError: the engine refused the request.
    """
    output = await service.collect(
        completion.backend_request, arrived=arrived, constraint_param=completion.constraint_param, prompt_param="prompt"
    )
    tokenizer = service.engine.tokenizer
    choices = [
        {
            "index": choice.index,
            "text": completion.echoed + choice.text,
            "logprobs": None if choice.logprobs is None else completion_logprobs(tokenizer, choice.logprobs, 0),
            "finish_reason": choice.finish_reason.value,
        }
        for choice in output.outputs
    ]
    return _body(completion, service, choices, usage=usage_body(output.usage))


async def stream_completion(
    service: Service, completion: PreparedCompletion, updates: AsyncGenerator[RequestUpdate, None]
) -> AsyncGenerator[str, None]:
    """The SSE events of a streamed completion: text deltas (never empty), one chunk per choice
    with its `finish_reason`, the usage chunk when asked for, then `data: [DONE]`."""
    tokenizer = service.engine.tokenizer
    offsets = dict.fromkeys(range(completion.backend_request.params.n), 0)
    output: RequestOutput | None = None
    async with aclosing(updates):
        if completion.echoed:
            for index in offsets:
                yield _event(completion, service, index, completion.echoed)
        async for update in updates:
            for delta in update.deltas:
                logprobs = None
                if delta.logprobs:
                    logprobs = completion_logprobs(tokenizer, delta.logprobs, offsets[delta.index])
                    offsets[delta.index] += sum(len(token) for token in logprobs["tokens"])
                finish_reason = None if delta.finish_reason is None else delta.finish_reason.value
                if delta.text or logprobs is not None or finish_reason is not None:
                    yield _event(completion, service, delta.index, delta.text, logprobs, finish_reason)
            output = update.output or output
    if output is not None and completion.request.include_usage:
        yield sse_event(_body(completion, service, [], usage=usage_body(output.usage)))
    yield DONE


def _event(
    completion: PreparedCompletion,
    service: Service,
    index: int,
    text: str,
    logprobs: dict[str, Any] | None = None,
    finish_reason: str | None = None,
) -> str:
    choice = {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}
    usage_field = {"usage": None} if completion.request.include_usage else {}
    return sse_event(_body(completion, service, [choice], **usage_field))


def _body(
    completion: PreparedCompletion, service: Service, choices: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    return {
        "id": completion.completion_id,
        "object": "text_completion",
        "created": completion.created,
        "model": service.served_model_name,
        "choices": choices,
        **extra,
    }
