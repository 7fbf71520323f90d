"""A backend for a model served elsewhere: any OpenAI-compatible chat API, over httpx.

    llm = sdk.LLM(base_url="http://host:8000/v1", model="Qwen/Qwen2.5-7B-Instruct")
    person = await llm.generate("...", output=Person)        # the same code as with a local model

Each request is one streamed `POST {base_url}/chat/completions` (server-sent events; a plain JSON
reply is read too) on one pooled `httpx.AsyncClient`. Connection errors, 429 and 5xx replies are
retried `max_retries` times before any text arrives, after the server's `Retry-After` or an
exponential backoff. Closing the stream (a cancelled task, a `break`) closes the HTTP response at
once, which is how OpenAI-compatible servers learn to abort a generation.

The constraint travels in the server's dialect, built from the output's source form:

    dialect          JSON outputs                          regex / choice / Lark grammar outputs
    "openai"         response_format json_schema, strict   (cannot say)
    "vllm"           structured_outputs.json               structured_outputs.regex / choice / grammar
    "llama.cpp"      json_schema                           choice as a GBNF grammar; regex, Lark: cannot say
    "none"           nothing: local validation only
    None (default)   "openai" for JSON, "vllm" for the rest (vLLM and `stencil serve` read both)

An output the dialect cannot say, or a constrained output after free reasoning (`reasoning=True`),
is a `RequestError` naming `dialect`, unless `allow_unconstrained=True` sends it without one.

Local validation, whatever the server claims: a server may ignore a constraint (vLLM drops fields it
does not know, llama.cpp falls back to free text on a grammar error), so every finished answer is
checked here with the output's compiled constraint before the SDK parses it with Pydantic. Regex,
choice, grammar and label answers must be accepted exactly. A JSON answer is accepted as written, or
as re-serialized by `json.dumps`, or else its parsed value must be valid against the output's JSON
Schema (`jsonschema`): the contract is the value, so whitespace, key order or `1.0` for `1`, which
the local text policy would not write, are not violations. A violation ends that completion with
finish reason "error" and an `sdk.ValidationError` (type "constraint_violation" or "json_invalid"),
which the client raises, or feeds back to the model when `retries` allow (for every output kind:
`enforces_constraints` is False here).

Tools travel as OpenAI's `tools`, `tool_choice` and `parallel_tool_calls` (every dialect), and the
conversation keeps its OpenAI form (assistant `tool_calls`, `role: "tool"` results): the server's
template renders both, so no tool text is added to the messages (`ToolFormat.OPENAI`). The calls the
server returns (`message.tool_calls`, or streamed `delta.tool_calls` whose argument fragments are
joined) become the completion's text in the call format (`sdk.tools.format`), each call streamed
whole once the next one starts or the completion ends, so the SDK reads them as it reads a local
model's: `sdk.tools.ToolRequest.read` checks each name and validates the arguments with the tool's
model, and checks the calls against `tool_choice` (a text answer where a call was required, another
tool than the named one). Content beside calls has no place in that format and is dropped from the
final text (it may have streamed already). A call cut by `max_tokens` is left open, so it reads as
incomplete.

Not available remotely: beam search (`RequestError`), scoring (closed sets are generated), token ids
(`token_ids` are empty; usage comes from the server, or counts streamed chunks when it sends none),
per-token logprobs (their sum is `cumulative_logprob`), the reasoning token budget.
"""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import httpx

import grammars
from runtime.engine.outputs import CompletionDelta, CompletionOutput, RequestOutput, RequestUpdate, Usage
from runtime.engine.sampling_params import SamplingParams
from runtime.engine.sequence import FinishReason
from runtime.errors import RequestError
from sdk import reasoning as reasoning_layout
from sdk.backends.base import Backend, BackendRequest
from sdk.errors import ClosedError, RemoteError, ValidationError
from sdk.outputs import OutputSpec
from sdk.tools.format import CALL_CLOSE, CALL_SEPARATOR, MARKER, ToolFormat, render_call
from sdk.tools.requests import ToolRequest

__all__ = ["DIALECTS", "Dialect", "RemoteBackend", "RemoteError", "check_answer", "retry_delay"]

#: How constraints are written for the server (see the module docstring).
Dialect = Literal["openai", "vllm", "llama.cpp", "none"]
DIALECTS: tuple[str, ...] = get_args(Dialect)

#: Seconds to wait for a connection, and for each read (a long prefill or a busy queue counts).
DEFAULT_TIMEOUT = httpx.Timeout(600.0, connect=10.0)
DEFAULT_MAX_RETRIES = 2
#: Replies worth another try: rate limits and a server that is overloaded, restarting or failing.
RETRY_STATUS_CODES = frozenset({408, 409, 429, 500, 502, 503, 504})
#: The longest `Retry-After` honoured; a server asking for more is waited for this long.
MAX_RETRY_AFTER = 60.0

# The sampling knobs outside OpenAI's API, per dialect: SamplingParams field -> request field.
_VLLM_EXTRAS = {
    "top_k": "top_k",
    "min_p": "min_p",
    "repetition_penalty": "repetition_penalty",
    "ignore_eos": "ignore_eos",
    "stop_token_ids": "stop_token_ids",
}
_EXTRAS: dict[str | None, dict[str, str]] = {
    None: _VLLM_EXTRAS,
    "openai": _VLLM_EXTRAS,
    "vllm": _VLLM_EXTRAS,
    "none": _VLLM_EXTRAS,
    "llama.cpp": {
        "top_k": "top_k",
        "min_p": "min_p",
        "repetition_penalty": "repeat_penalty",
        "ignore_eos": "ignore_eos",
    },
}
_DEFAULTS = SamplingParams()


class RemoteBackend(Backend):
    """Generation on an OpenAI-compatible server (vLLM, SGLang, llama.cpp, `stencil serve`, ...).

    Args:
        base_url: the API root, e.g. "http://host:8000/v1".
        model: the served model's name; None asks the server (`GET /models`, the first one).
        api_key: sent as a bearer token.
        dialect: how constraints are written (see the module docstring); None chooses per output.
        allow_unconstrained: send outputs the dialect cannot say without a constraint (still
            validated locally) instead of raising.
        timeout: seconds (or an `httpx.Timeout`) for connecting and for each read.
        max_retries: further tries after a connection error, a 429 or a 5xx reply.
        backoff: seconds before the first retry when the server sends no `Retry-After`; doubled
            each retry.
        transport: an httpx transport instead of the network (`httpx.MockTransport` in tests).

    Raises:
        RequestError: an unknown dialect or a bad number (`field` names it).
    """

    enforces_constraints = False

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        dialect: Dialect | None = None,
        allow_unconstrained: bool = False,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        backoff: float = 0.5,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if dialect is not None and dialect not in DIALECTS:
            raise RequestError(f"must be one of {DIALECTS} or None, got {dialect!r}", "dialect")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise RequestError(f"must be an int >= 0, got {max_retries!r}", "max_retries")
        if isinstance(timeout, (int, float)) and not timeout > 0:
            raise RequestError(f"must be a number of seconds > 0, got {timeout!r}", "timeout")
        if model is not None and not isinstance(model, str):
            raise RequestError(f"a remote model is named by a str, got {model!r}", "model")
        self.model = model
        self.dialect = dialect
        self.allow_unconstrained = allow_unconstrained
        self.max_retries = max_retries
        self.backoff = backoff
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout, transport=transport)
        self._request_ids = itertools.count()
        self.is_closed = False

    @property
    def tool_format(self) -> ToolFormat:
        """`OPENAI`: the server takes the tools and renders the history itself."""
        return ToolFormat.OPENAI

    async def stream(self, request: BackendRequest) -> AsyncGenerator[RequestUpdate, None]:
        """See `Backend.stream`; also raises `RemoteError` (the server failed or refused)."""
        if self.is_closed:
            raise ClosedError("the LLM is closed")
        payload = request_payload(request, self.dialect, allow_unconstrained=self.allow_unconstrained)
        payload["model"] = self.model if self.model is not None else await self._served_model()
        request_id = f"remote-{next(self._request_ids)}"
        choices: dict[int, _Choice] = {}
        usage: Usage | None = None
        num_chunks = 0
        async with self._send("POST", "chat/completions", payload) as response:
            async for chunk in self._chunks(response):
                num_chunks += 1
                usage = _usage(chunk) or usage
                deltas = _deltas(chunk, choices)
                if deltas:
                    yield RequestUpdate(request_id=request_id, deltas=deltas)
        if usage is None:  # the server did not count: each streamed chunk is about one token
            usage = Usage(prompt_tokens=0, completion_tokens=num_chunks)
        outputs = []
        for index in range(request.params.n):
            choice = choices.get(index)
            if choice is None or choice.finish_reason is None:
                raise RemoteError(f"the reply ended before completion {index} finished")
            outputs.append(_completion(request, index, choice, choice.finish_reason, usage))
        yield RequestUpdate(
            request_id=request_id, deltas=(), output=RequestOutput(request_id, (), tuple(outputs), usage)
        )

    async def aclose(self) -> None:
        """Close the connection pool; calls still running fail with `ClosedError`."""
        self.is_closed = True
        await self._client.aclose()

    async def _served_model(self) -> str:
        """The first model the server lists (cached)."""
        async with self._send("GET", "models", None) as response:
            body = _json(await response.aread(), response.status_code)
        try:
            self.model = str(body["data"][0]["id"])
        except (KeyError, IndexError, TypeError) as exc:
            raise RemoteError("GET /models listed no model; pass model=", status_code=response.status_code) from exc
        return self.model

    @asynccontextmanager
    async def _send(self, method: str, path: str, payload: dict[str, Any] | None) -> AsyncIterator[httpx.Response]:
        """A successful streamed response, retried on connection errors, 429 and 5xx; closed on exit.

        Raises:
            RemoteError: an error reply, or no reply after the retries.
            ClosedError: the backend was closed meanwhile.
        """
        request = self._client.build_request(method, path, json=payload)
        for attempt in itertools.count():
            try:
                response = await self._client.send(request, stream=True)
            except httpx.TransportError as exc:
                if self.is_closed:
                    raise ClosedError("the LLM is closed") from exc
                if attempt >= self.max_retries:
                    raise RemoteError(f"{type(exc).__name__}: {exc} (after {attempt} retries)") from exc
                await asyncio.sleep(retry_delay(attempt, self.backoff, None))
                continue
            if response.status_code in RETRY_STATUS_CODES and attempt < self.max_retries:
                await response.aclose()
                await asyncio.sleep(retry_delay(attempt, self.backoff, response.headers.get("retry-after")))
                continue
            try:
                if response.is_error:
                    raise _error_reply(response.status_code, await response.aread())
                yield response
            except httpx.HTTPError as exc:  # mid-stream: the text so far is gone, so no retry
                if self.is_closed:
                    raise ClosedError("the LLM is closed") from exc
                raise RemoteError(f"{type(exc).__name__}: {exc}", status_code=response.status_code) from exc
            finally:
                await response.aclose()
            return

    async def _chunks(self, response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
        """The reply's chat-completion chunks: each server-sent event, or one plain JSON body."""
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            yield _json(await response.aread(), response.status_code)  # a whole completion: choices carry a message
            return
        data: list[str] = []
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
                continue
            if line or not data:
                continue  # another field (event:, id:, a comment) or a blank line between events
            event, data = "\n".join(data), []
            if event.strip() == "[DONE]":
                return
            chunk = _json(event.encode(), response.status_code)
            if "error" in chunk:
                raise _error_reply(None, event.encode())
            yield chunk


def request_payload(
    request: BackendRequest, dialect: Dialect | None, *, allow_unconstrained: bool = False
) -> dict[str, Any]:
    """The JSON body of a streamed chat completion for `request`, its constraint in `dialect`, its
    tools in OpenAI's fields.

    Raises:
        RequestError: beam search (`num_beams`), a token-id prompt, template variables (the server
            renders the prompt), a knob the dialect has no field for, or an output the dialect
            cannot say (`dialect`; `field` names each).
    """
    params = request.params
    if request.prompt_token_ids is not None:
        raise RequestError("a chat completions API takes messages, not token ids", "prompt_token_ids")
    if request.template_variables:
        raise RequestError("a remote server renders the prompt with its own chat template", "template_variables")
    if params.use_beam_search:
        raise RequestError("beam search is not part of the chat completions API; sample instead", "num_beams")
    body: dict[str, Any] = {
        "messages": [_wire_message(message) for message in request.messages],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
    }
    optional: dict[str, tuple[object, object]] = {
        "n": (params.n, 1),
        "seed": (params.seed, None),
        "stop": (list(params.stop), []),
        "presence_penalty": (params.presence_penalty, 0.0),
        "frequency_penalty": (params.frequency_penalty, 0.0),
    }
    body.update({name: value for name, (value, default) in optional.items() if value != default})
    if params.logprobs is not None:
        body.update(logprobs=True, top_logprobs=params.logprobs)
    extras = _EXTRAS[dialect]
    for name in ("top_k", "min_p", "repetition_penalty", "ignore_eos", "stop_token_ids"):
        value = getattr(params, name)
        if value == getattr(_DEFAULTS, name):
            continue
        if name not in extras:
            raise RequestError(f"the {dialect} dialect has no field for it", name)
        body[extras[name]] = list(value) if isinstance(value, tuple) else value
    body.update(_constraint_fields(request, dialect, allow_unconstrained))
    if request.tools is not None:
        body.update(_tool_fields(request.tools))
    return body


def _wire_message(message: Mapping[str, Any]) -> dict[str, Any]:
    """A chat message in OpenAI's wire form: past calls' arguments as JSON text, unknown ids left out."""
    plain = dict(message)
    if plain.get("tool_calls"):
        plain["tool_calls"] = [_wire_call(call) for call in plain["tool_calls"]]
    return plain


def _wire_call(call: Mapping[str, Any]) -> dict[str, Any]:
    function = dict(call["function"])
    if not isinstance(function.get("arguments"), str):
        function["arguments"] = json.dumps(function.get("arguments", {}), ensure_ascii=False)
    return {**{key: value for key, value in call.items() if value is not None}, "function": function}


def _tool_fields(tools: ToolRequest) -> dict[str, Any]:
    """OpenAI's `tools`, `tool_choice` and `parallel_tool_calls` for a call's tools."""
    choice = tools.choice
    tool_choice = {"type": "function", "function": {"name": choice.name}} if choice.mode == "named" else choice.mode
    return {
        "tools": [tool.to_openai() for tool in tools.tools],
        "tool_choice": tool_choice,
        "parallel_tool_calls": tools.parallel,
    }


def _constraint_fields(request: BackendRequest, dialect: Dialect | None, allow_unconstrained: bool) -> dict[str, Any]:
    """The request fields that carry the output's constraint (see the module docstring)."""
    spec = request.output
    if spec is None or spec.constraint is None or dialect == "none":
        return {}
    form, value = _source_form(spec)
    chosen = dialect or ("openai" if form == "json" else "vllm")
    fields = None if request.reasoning else _DIALECT_FIELDS[chosen](form, value)
    if fields is not None or allow_unconstrained:
        return fields or {}
    what = f"a {form} output after free reasoning" if request.reasoning else f"a {form} output"
    raise RequestError(
        f"the {chosen} dialect cannot constrain {what}; choose another dialect, or pass "
        "allow_unconstrained=True to send it unconstrained (answers are validated locally either way)",
        "dialect",
    )


def _source_form(spec: OutputSpec) -> tuple[str, Any]:
    """("json", schema) | ("regex", pattern) | ("choice", options) | ("grammar", Lark text)."""
    if spec.labels is not None:
        return "choice", list(spec.labels)
    if spec.json_schema is not None:
        return "json", spec.json_schema
    output = spec.output
    if isinstance(output, grammars.Regex):
        return "regex", output.pattern
    if isinstance(output, grammars.Choice):
        return "choice", list(output.options)
    return "grammar", output.text


def _openai_fields(form: str, value: Any) -> dict[str, Any] | None:
    if form != "json":
        return None
    return {
        "response_format": {"type": "json_schema", "json_schema": {"name": "output", "schema": value, "strict": True}}
    }


def _vllm_fields(form: str, value: Any) -> dict[str, Any] | None:
    return {"structured_outputs": {form: value}}


def _llama_cpp_fields(form: str, value: Any) -> dict[str, Any] | None:
    if form == "json":
        return {"json_schema": value}
    if form == "choice":
        return {"grammar": "root ::= " + " | ".join(_gbnf_literal(option) for option in value)}
    return None


_DIALECT_FIELDS = {"openai": _openai_fields, "vllm": _vllm_fields, "llama.cpp": _llama_cpp_fields}


def _gbnf_literal(text: str) -> str:
    """`text` as a GBNF string literal."""
    escapes = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
    return '"' + "".join(escapes.get(c, f"\\x{ord(c):02x}" if ord(c) < 0x20 else c) for c in text) + '"'


def check_answer(spec: OutputSpec, answer: str) -> list[dict[str, Any]]:
    """Where an answer breaks its output's constraint (empty: nowhere), as Pydantic-style error
    dicts; what counts is in the module docstring.

    Raises:
        grammars.ConstraintLimitError: the constraint took too long to check the text.
    """
    constraint = spec.constraint
    if constraint is None or constraint.accepts(answer):
        return []
    if spec.labels is not None or spec.json_schema is None:
        return [_violation((), "not in the output's language", answer)]
    try:
        value = json.loads(answer)
    except json.JSONDecodeError as exc:
        return [
            {"type": "json_invalid", "loc": (), "msg": f"Invalid JSON: {exc.msg} at offset {exc.pos}", "input": answer}
        ]
    if constraint.accepts(json.dumps(value, ensure_ascii=False)):
        return []
    # The schema the constraint was compiled from, with the same resources (OutputSpec's validator).
    errors = spec.schema_validator().iter_errors(value)
    return [_violation(tuple(e.absolute_path), f"{e.message} (keyword {e.validator!r})", e.instance) for e in errors]


def _violation(loc: tuple[Any, ...], message: str, value: Any) -> dict[str, Any]:
    return {"type": "constraint_violation", "loc": loc, "msg": message, "input": value}


@dataclass
class _Call:
    """One call a completion made, as streamed so far."""

    name: str = ""
    arguments: str = ""


@dataclass
class _Choice:
    """What the reply has said of one completion so far.

    Attributes:
        num_calls_sent: call blocks already streamed as text (a call is streamed whole, once the
            next one starts or the completion ends).
    """

    content: str = ""
    calls: dict[int, _Call] = field(default_factory=dict)
    num_calls_sent: int = 0
    finish_reason: FinishReason | None = None
    logprob_sum: float | None = None

    def read(self, choice: Mapping[str, Any]) -> str:
        """Record one chunk's news of this completion; return the text it adds to the stream."""
        message = choice.get("delta") or choice.get("message") or {}
        added = message.get("content") or ""
        self.content += added
        for position, entry in enumerate(message.get("tool_calls") or ()):
            call = self.calls.setdefault(int(entry.get("index", position)), _Call())
            function = entry.get("function") or {}
            call.name = call.name or str(function.get("name") or "")
            arguments = function.get("arguments")
            if isinstance(arguments, str):  # OpenAI's form: fragments of the JSON text
                call.arguments += arguments
            elif arguments is not None:  # some servers send the parsed object, whole
                call.arguments = json.dumps(arguments, ensure_ascii=False)
        entries = (choice.get("logprobs") or {}).get("content") or ()
        if entries:
            self.logprob_sum = (self.logprob_sum or 0.0) + sum(float(e["logprob"]) for e in entries)
        if choice.get("finish_reason") is not None:
            self.finish_reason = FinishReason.LENGTH if choice["finish_reason"] == "length" else FinishReason.STOP
        indices = sorted(self.calls)
        for index in (indices if self.finish_reason is not None else indices[:-1])[self.num_calls_sent :]:
            added += (CALL_SEPARATOR if self.num_calls_sent else "") + self._block(index)
            self.num_calls_sent += 1
        return added

    def text(self) -> str:
        """The completion: its calls in the call format when it made any, else its content."""
        if not self.calls:
            return self.content
        return CALL_SEPARATOR.join(self._block(index) for index in sorted(self.calls))

    def _block(self, index: int) -> str:
        """A call's block; the last one left open when `max_tokens` cut it, as a local model's would be."""
        call = self.calls[index]
        block = render_call(call.name, call.arguments.strip() or "{}")
        is_cut = self.finish_reason is FinishReason.LENGTH and index == max(self.calls)
        return block.removesuffix(CALL_CLOSE) if is_cut else block


def _completion(
    request: BackendRequest, index: int, choice: _Choice, finish_reason: FinishReason, usage: Usage
) -> CompletionOutput:
    """A finished completion, checked locally: an answer outside the constraint ends with an error.
    Calls, and any text where a call was required, are left to `ToolRequest.read`, which checks them."""
    text = choice.text()
    is_calls = request.tools is not None and (text.startswith(MARKER) or request.tools.choice.mode != "auto")
    error = None
    if finish_reason is FinishReason.STOP and request.output is not None and not is_calls:
        reasoning, answer = reasoning_layout.split(text) if request.reasoning else (None, text)
        details = [] if answer is None else check_answer(request.output, answer)
        if details:
            error = ValidationError(details, text=text, usage=usage, reasoning=reasoning)
    return CompletionOutput(
        index=index,
        token_ids=(),
        text=text,
        finish_reason=FinishReason.ERROR if error else finish_reason,
        cumulative_logprob=choice.logprob_sum,
        error=error,
    )


def _deltas(chunk: Mapping[str, Any], choices: dict[int, _Choice]) -> tuple[CompletionDelta, ...]:
    """One chunk's news per completion, recorded in `choices` (by completion index)."""
    deltas = []
    for found in chunk.get("choices") or ():
        index = int(found.get("index", 0))
        choice = choices.setdefault(index, _Choice())
        is_finishing = choice.finish_reason is None and found.get("finish_reason") is not None
        text = choice.read(found)
        if text or is_finishing:
            finish_reason = choice.finish_reason if is_finishing else None
            deltas.append(CompletionDelta(index=index, token_ids=(), text=text, finish_reason=finish_reason))
    return tuple(deltas)


def _usage(chunk: Mapping[str, Any]) -> Usage | None:
    found = chunk.get("usage")
    if not isinstance(found, Mapping):
        return None
    return Usage(
        prompt_tokens=int(found.get("prompt_tokens", 0)), completion_tokens=int(found.get("completion_tokens", 0))
    )


def _json(raw: bytes, status_code: int) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise RemoteError(f"the reply is not JSON: {raw[:200]!r}", status_code=status_code) from exc
    if not isinstance(value, dict):
        raise RemoteError(f"the reply is not a JSON object: {raw[:200]!r}", status_code=status_code)
    return value


def _error_reply(status_code: int | None, raw: bytes) -> RemoteError:
    """The error a reply's envelope describes: OpenAI's {"error": {...}}, vLLM's flat
    {"object": "error", "message": ...}, or any text."""
    try:
        body = json.loads(raw)
    except ValueError:
        return RemoteError(raw.decode("utf-8", "replace")[:500] or "no message", status_code=status_code)
    found = body.get("error", body) if isinstance(body, dict) else body
    if not isinstance(found, dict):
        return RemoteError(str(found)[:500], status_code=status_code)
    error_type = found.get("type") or found.get("code")
    return RemoteError(
        str(found.get("message") or body)[:500],
        status_code=status_code,
        error_type=str(error_type) if error_type is not None else None,
    )


def retry_delay(attempt: int, backoff: float, retry_after: str | None) -> float:
    """Seconds to wait before retry `attempt` (0 for the first): the server's `Retry-After` (seconds
    or an HTTP date, at most `MAX_RETRY_AFTER`) when it sent a usable one, else `backoff * 2 ** attempt`."""
    if retry_after is not None:
        seconds: float | None
        try:
            seconds = float(retry_after)
        except ValueError:
            try:
                seconds = email.utils.parsedate_to_datetime(retry_after).timestamp() - time.time()
            except (TypeError, ValueError):
                seconds = None
        if seconds is not None:
            return min(max(seconds, 0.0), MAX_RETRY_AFTER)
    return backoff * 2**attempt
