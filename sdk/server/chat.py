"""`POST /v1/chat/completions`: messages, a constraint (any dialect), tools, and the answer in
OpenAI's shape, whole or streamed.

Tool calling is `sdk.tools`, the SDK's one implementation: the tools and past calls go into the
prompt (`tool_prompt`), the completion is constrained per `tool_choice` (`tool_call_constraint`, the
answer's own constraint kept for "auto"), and read back by `parse_tool_output` or, streaming, by
`ToolCallParser`, whose events become tool-call deltas. OpenAI's rules: `content` is null beside
calls; `finish_reason` is "tool_calls" for "auto" and "required", "stop" for a named tool, and
"length" (with no partial call) when `max_tokens` cuts a call.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, cast

from grammars.compiler import Constraint
from grammars.errors import ConstraintLimitError, StencilError
from runtime.chat_template import validate_messages
from runtime.engine.outputs import CompletionDelta, CompletionOutput, RequestUpdate
from runtime.engine.sequence import FinishReason, TokenLogprob
from runtime.errors import RequestError
from sdk.backends.base import BackendRequest
from sdk.server.dialects import compile_constraint, find_constraint
from sdk.server.errors import APIError, from_stencil_error
from sdk.server.logprobs import chat_logprobs
from sdk.server.requests import ChatCompletionRequest, chat_max_tokens, chat_num_logprobs, sampling_params
from sdk.server.service import Service, usage_body
from sdk.server.sse import DONE, sse_event
from sdk.tools import (
    ArgumentsDelta,
    CallStart,
    ContentDelta,
    ToolCallParser,
    ToolChoice,
    Toolset,
    detect_tool_format,
    new_call_id,
    parse_tool_output,
    resolve_tool_choice,
    tool_call_constraint,
    tool_prompt,
    toolset,
)

__all__ = ["PreparedChat", "chat_messages", "complete_chat", "prepare_chat", "stream_chat"]

#: Message keys OpenAI clients send that carry nothing for the prompt when empty.
_EMPTY_KEYS_DROPPED = ("name", "tool_calls", "tool_call_id", "refusal", "audio", "annotations")


@dataclass(frozen=True)
class PreparedChat:
    """A validated chat request, ready to generate.

    Attributes:
        request: the parsed body.
        backend_request: messages (tools and history rendered), params, constraint.
        constraint_param: the field the constraint came from (errors name it), None without one.
        tools: the tools offered (None: none, or `tool_choice` "none").
        choice: the resolved tool choice.
        completion_id: the `chatcmpl-...` id of the answer.
        created: the answer's Unix time.
    """

    request: ChatCompletionRequest
    backend_request: BackendRequest
    constraint_param: str | None
    tools: Toolset | None
    choice: ToolChoice
    completion_id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def forces_calls(self) -> bool:
        """Whether the completion can only be tool calls ("required" or a named tool)."""
        return self.tools is not None and self.choice.mode in ("required", "named")

    def tool_names(self) -> frozenset[str]:
        return frozenset(tool.name for tool in self.tools) if self.tools is not None else frozenset()


def chat_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI chat messages as the chat template takes them.

    Content parts (`[{"type": "text", "text": ...}]`) are joined, `developer` (OpenAI's newer name
    for the system role) becomes `system`, and keys that are null or empty are dropped.

    Raises:
        APIError: a 400 naming the malformed message field (a non-text content part, a bad role).
    """
    normalized = []
    for index, message in enumerate(messages):
        plain = {
            key: value
            for key, value in message.items()
            if not (key in _EMPTY_KEYS_DROPPED and (value is None or value == []))
        }
        if plain.get("role") == "developer":
            plain["role"] = "system"
        if isinstance(plain.get("content"), list):
            plain["content"] = _joined_parts(plain["content"], f"messages[{index}].content")
        if plain.get("role") == "assistant" and plain.get("content") is None and "tool_calls" not in plain:
            plain["content"] = ""
        normalized.append(plain)
    try:
        return validate_messages(normalized)
    except RequestError as exc:
        raise from_stencil_error(exc) from exc


def _joined_parts(parts: list[Any], param: str) -> str:
    texts = []
    for number, part in enumerate(parts):
        if not isinstance(part, Mapping) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
            raise APIError.bad_request(
                f"{param}[{number}]: only text content parts are supported, got {kind!r}", f"{param}[{number}]"
            )
        texts.append(part["text"])
    return "".join(texts)


async def prepare_chat(service: Service, request: ChatCompletionRequest) -> PreparedChat:
    """Check a chat request and build what the engine runs.

    Raises:
        APIError: 404 for another model; 400 for anything malformed, unenforceable or conflicting.
    """
    service.check_model(request.model)
    messages = chat_messages(request.messages)
    found = find_constraint(request)
    answer = await compile_constraint(found) if found is not None else None
    try:
        tools = toolset(request.tools) if request.tools else None
        tool_choice = request.tool_choice if request.tool_choice is not None else ("auto" if tools else "none")
        choice = resolve_tool_choice(tool_choice, tools)
        offered = tools if choice.mode != "none" else None
        constraint: Constraint | None = answer
        if offered is not None:
            parallel = request.parallel_tool_calls is not False
            constraint = cast(
                Constraint | None, tool_call_constraint(offered, choice, parallel=parallel, answer=answer)
            )
        prompt = tool_prompt(
            messages,
            offered,
            tool_format=detect_tool_format(service.engine.tokenizer.chat_template),
            mode=choice.mode,
            name=choice.name,
        )
    except StencilError as exc:
        raise from_stencil_error(exc, constraint_param=found.param if found else "tools") from exc
    params = sampling_params(
        request,
        max_tokens=chat_max_tokens(request),
        default_max_tokens=service.engine.max_model_len,
        logprobs=chat_num_logprobs(request),
        is_constrained=constraint is not None,
    )
    backend_request = BackendRequest(
        messages=prompt.messages,
        params=params,
        constraint=constraint,
        template_variables=prompt.template_variables or None,
    )
    return PreparedChat(request, backend_request, found.param if found else None, offered, choice)


async def complete_chat(service: Service, chat: PreparedChat, arrived: float) -> dict[str, Any]:
    """The whole `chat.completion` object of a request.

    Raises:
        APIError: the engine refused the request, or a constraint could not go on.
    """
    output = await service.collect(
        chat.backend_request, arrived=arrived, constraint_param=chat.constraint_param, prompt_param="messages"
    )
    tokenizer = service.engine.tokenizer
    choices = []
    for completion in output.outputs:
        _check_completed(completion)
        message, finish_reason = _message(chat, completion)
        logprobs = chat_logprobs(tokenizer, completion.logprobs) if completion.logprobs is not None else None
        choices.append(
            {"index": completion.index, "message": message, "logprobs": logprobs, "finish_reason": finish_reason}
        )
    return {
        "id": chat.completion_id,
        "object": "chat.completion",
        "created": chat.created,
        "model": service.served_model_name,
        "choices": choices,
        "usage": usage_body(output.usage),
    }


def _message(chat: PreparedChat, completion: CompletionOutput) -> tuple[dict[str, Any], str]:
    """The assistant message of a completion, and its finish reason."""
    finish_reason = str(completion.finish_reason.value)
    if chat.tools is None:
        return {"role": "assistant", "content": completion.text, "refusal": None}, finish_reason
    if finish_reason == "length" and _is_calls(chat, completion.text):  # a cut call is no call
        return {"role": "assistant", "content": None, "refusal": None}, finish_reason
    parsed = parse_tool_output(completion.text, chat.tool_names())
    if not parsed.calls:
        return {"role": "assistant", "content": parsed.content, "refusal": None}, finish_reason
    tool_calls = [
        {"id": new_call_id(), "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
        for call in parsed.calls
    ]
    message = {"role": "assistant", "content": None, "refusal": None, "tool_calls": tool_calls}
    return message, _calls_finish_reason(chat)


def _is_calls(chat: PreparedChat, text: str) -> bool:
    """Whether a (possibly cut) completion is tool calls rather than content."""
    if chat.forces_calls:
        return True
    parser = ToolCallParser(chat.tool_names())
    parser.feed(text)
    return parser.is_calls


def _calls_finish_reason(chat: PreparedChat) -> str:
    return "stop" if chat.choice.mode == "named" else "tool_calls"


def _check_completed(completion: CompletionOutput) -> None:
    """Raises the `APIError` of a completion the engine ended with an error (see `_failure`)."""
    if completion.error is not None:
        raise _failure(completion.error)


def _failure(error: StencilError) -> APIError:
    """The answer to a constraint that could not go on: 503 (retry) when a mask ran out of its time
    budget under load, 500 otherwise (a bug)."""
    if isinstance(error, ConstraintLimitError):
        return APIError.overloaded(f"the constraint could not be enforced in time: {error}", 503)
    return APIError(500, f"the constraint failed: {error}", error_type="server_error")


@dataclass
class _StreamedChoice:
    """What one streamed choice has sent: its tool-call parser, ids, and logprobs not yet sent."""

    parser: ToolCallParser | None
    call_ids: list[str] = field(default_factory=list)
    pending_logprobs: list[TokenLogprob] = field(default_factory=list)
    is_finished: bool = False


async def stream_chat(
    service: Service, chat: PreparedChat, updates: AsyncGenerator[RequestUpdate, None]
) -> AsyncGenerator[str, None]:
    """The SSE events of a streamed chat completion.

    The first event of each choice carries `role: "assistant"`; content deltas are never empty; a
    tool call's id, type and name come once, on its first delta, then argument fragments; each
    choice ends with one chunk carrying its `finish_reason`; `stream_options.include_usage` adds a
    last chunk with the usage and no choices; then `data: [DONE]`. A constraint that fails midway
    sends an error event instead of the rest.

    Args:
        service: the server's service (tokenizer, model name).
        chat: the prepared request.
        updates: the engine's updates (`sdk.server.sse.started`: the first one taken before the
            response began, so that refusals are HTTP errors); closed with this generator, which
            aborts the request.
    """
    names = chat.tool_names()
    states = {
        index: _StreamedChoice(ToolCallParser(names) if chat.tools is not None else None)
        for index in range(chat.backend_request.params.n)
    }
    wants_logprobs = chat.backend_request.params.logprobs is not None
    async with aclosing(updates):
        for index in states:
            yield _chunk(chat, service, index, {"role": "assistant"})
        output = None
        while True:
            try:
                update = await anext(updates)
            except StopAsyncIteration:
                break
            except APIError as exc:
                yield sse_event(exc.body())
                return
            for delta in update.deltas:
                state = states[delta.index]
                for event in _delta_events(chat, service, state, delta, wants_logprobs):
                    yield event
            if update.output is not None:
                output = update.output
                error = next((c.error for c in output.outputs if c.error is not None), None)
                if error is not None:
                    yield sse_event(_failure(error).body())
                    return
    if output is not None and chat.request.include_usage:
        yield sse_event(_chunk_body(chat, service, [], usage=usage_body(output.usage)))
    yield DONE


def _delta_events(
    chat: PreparedChat, service: Service, state: _StreamedChoice, delta: CompletionDelta, wants_logprobs: bool
) -> list[str]:
    """The chunks one engine delta of one choice becomes."""
    tokenizer = service.engine.tokenizer
    if delta.logprobs:
        state.pending_logprobs.extend(delta.logprobs)
    pieces: list[dict[str, Any]] = []
    if state.parser is None:
        if delta.text:
            pieces.append({"content": delta.text})
    else:
        events = state.parser.feed(delta.text) if delta.text else []
        is_cut_call = delta.finish_reason is FinishReason.LENGTH and (state.parser.is_calls or chat.forces_calls)
        if delta.finish_reason is not None and not is_cut_call:  # a cut call's held text is no content
            events += state.parser.finish()
        for event in events:
            if isinstance(event, ContentDelta):
                pieces.append({"content": event.text})
            elif isinstance(event, CallStart):
                state.call_ids.append(new_call_id())
                call = {"id": state.call_ids[-1], "type": "function", "function": {"name": event.name, "arguments": ""}}
                pieces.append({"tool_calls": [{"index": event.index, **call}]})
            elif isinstance(event, ArgumentsDelta):
                pieces.append({"tool_calls": [{"index": event.index, "function": {"arguments": event.text}}]})
    chunks = []
    for number, piece in enumerate(pieces):
        logprobs = None
        if wants_logprobs and number == 0 and state.pending_logprobs:
            logprobs = chat_logprobs(tokenizer, state.pending_logprobs)
            state.pending_logprobs = []
        chunks.append(_chunk(chat, service, delta.index, piece, logprobs=logprobs))
    if delta.finish_reason is not None:
        finish_reason = delta.finish_reason.value
        if state.call_ids and finish_reason == "stop":
            finish_reason = _calls_finish_reason(chat)
        logprobs = (
            chat_logprobs(tokenizer, state.pending_logprobs) if wants_logprobs and state.pending_logprobs else None
        )
        chunks.append(_chunk(chat, service, delta.index, {}, finish_reason=finish_reason, logprobs=logprobs))
    return chunks


def _chunk(
    chat: PreparedChat,
    service: Service,
    index: int,
    delta: dict[str, Any],
    *,
    finish_reason: str | None = None,
    logprobs: dict[str, Any] | None = None,
) -> str:
    choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
    return sse_event(_chunk_body(chat, service, [choice]))


def _chunk_body(
    chat: PreparedChat, service: Service, choices: list[dict[str, Any]], usage: dict[str, int] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": chat.completion_id,
        "object": "chat.completion.chunk",
        "created": chat.created,
        "model": service.served_model_name,
        "choices": choices,
    }
    if chat.request.include_usage:
        body["usage"] = usage
    return body
