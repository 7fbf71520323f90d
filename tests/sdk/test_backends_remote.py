"""The remote backend against fake servers (httpx.MockTransport) that answer as vLLM, llama.cpp and
OpenAI do: payloads per dialect, streaming, retries, error envelopes, cancellation, and the local
validation that keeps an unconstrained server from handing back an invalid value."""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from enum import Enum
from typing import Any, Literal

import httpx
import pytest
from pydantic import BaseModel, Field

import grammars
import sdk
from runtime import SamplingParams
from sdk import LLM, SyncLLM
from sdk.backends import BackendRequest, RemoteBackend, RemoteError
from sdk.backends.remote import MAX_RETRY_AFTER, request_payload, retry_delay

BASE_URL = "http://fake-server/v1"


class Person(BaseModel):
    name: str = Field(max_length=40)
    age: int = Field(ge=0, le=130)


Reply = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


class FakeServer:
    """An OpenAI-compatible server that plays `replies` in order and records each request."""

    def __init__(self, replies: Sequence[Reply]) -> None:
        self.replies = list(replies)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply if isinstance(reply, httpx.Response) else reply(request)

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(request.content) for request in self.requests if request.method == "POST"]


def chunks(text: str, *, index: int = 0, finish: str | None = "stop", pieces: int = 3) -> list[dict[str, Any]]:
    """A completion as vLLM streams it: a role delta, content in pieces, the finish reason."""
    size = max(1, -(-len(text) // pieces))
    parts = [text[i : i + size] for i in range(0, len(text), size)]
    found = [{"id": "chatcmpl-1", "choices": [{"index": index, "delta": {"role": "assistant"}, "finish_reason": None}]}]
    found += [
        {"id": "chatcmpl-1", "choices": [{"index": index, "delta": {"content": p}, "finish_reason": None}]}
        for p in parts
    ]
    if finish is not None:
        found.append({"id": "chatcmpl-1", "choices": [{"index": index, "delta": {}, "finish_reason": finish}]})
    return found


def sse(*events: dict[str, Any], usage: tuple[int, int] | None = (12, 7), done: bool = True) -> httpx.Response:
    lines = [f"data: {json.dumps(event)}\n\n" for event in events]
    if usage is not None:
        lines.append(
            f"data: {json.dumps({'choices': [], 'usage': dict(zip(('prompt_tokens', 'completion_tokens'), usage))})}\n\n"
        )
    if done:
        lines.append("data: [DONE]\n\n")
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content="".join(lines).encode())


def completion(text: str, **options: Any) -> httpx.Response:
    return sse(*chunks(text), **options)


def error_reply(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


OPENAI_RATE_LIMIT = {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}
VLLM_BAD_REQUEST = {"object": "error", "message": "Invalid JSON schema", "type": "BadRequestError", "code": 400}
LLAMA_CPP_UNAVAILABLE = {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}


def remote_llm(server: FakeServer, **options: Any) -> LLM:
    options.setdefault("model", "served-model")
    return LLM(backend=RemoteBackend(BASE_URL, transport=httpx.MockTransport(server), backoff=0.0, **options))


@pytest.fixture
async def closing() -> AsyncIterator[list[LLM]]:
    """LLMs to close after the test."""
    made: list[LLM] = []
    yield made
    for llm in made:
        await llm.aclose()


def make(closing: list[LLM], server: FakeServer, **options: Any) -> LLM:
    llm = remote_llm(server, **options)
    closing.append(llm)
    return llm


# Typed values over the wire


async def test_a_typed_value_streams_over_sse_with_the_servers_usage(closing: list[LLM]) -> None:
    server = FakeServer([completion('{"name": "Ada", "age": 36}')])
    result = await make(closing, server, api_key="secret").run("Ada, 36.", output=Person)
    assert result.value == Person(name="Ada", age=36)
    assert result.usage == sdk.Usage(prompt_tokens=12, completion_tokens=7)
    assert result.finish_reason == "stop" and result.timings.time_to_first_token is not None
    (request,) = server.requests
    assert request.url == "http://fake-server/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer secret"
    body = server.bodies[0]
    assert body["model"] == "served-model" and body["stream"] is True
    assert body["messages"][-1] == {"role": "user", "content": "Ada, 36."}


async def test_a_plain_json_reply_is_read_too(closing: list[LLM]) -> None:
    reply = {
        "id": "chatcmpl-9",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "42"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1},
    }
    server = FakeServer([httpx.Response(200, json=reply)])
    result = await make(closing, server).run("?", output=int)
    assert (result.value, result.usage.completion_tokens) == (42, 1)


async def test_without_usage_the_streamed_chunks_are_counted(closing: list[LLM]) -> None:
    server = FakeServer([sse(*chunks("hello there", pieces=2), usage=None)])
    result = await make(closing, server).run("hi")
    assert result.value == "hello there"
    assert result.usage == sdk.Usage(prompt_tokens=0, completion_tokens=4)  # role, 2 pieces, finish


async def test_model_none_asks_the_server_which_it_serves(closing: list[LLM]) -> None:
    models = httpx.Response(200, json={"object": "list", "data": [{"id": "llama-3-8b", "object": "model"}]})
    server = FakeServer([models, completion("7"), completion("8")])
    llm = make(closing, server, model=None)
    assert [await llm.generate("?", output=int), await llm.generate("?", output=int)] == [7, 8]
    assert [r.url.path for r in server.requests] == ["/v1/models", "/v1/chat/completions", "/v1/chat/completions"]
    assert server.bodies[0]["model"] == server.bodies[1]["model"] == "llama-3-8b"


async def test_partial_values_stream_then_the_final_one(closing: list[LLM]) -> None:
    server = FakeServer([sse(*chunks('{"name": "Ada", "age": 36}', pieces=6))])
    partials = [value async for value in make(closing, server).stream("?", output=Person)]
    assert partials[-1] == Person(name="Ada", age=36)
    assert len(partials) >= 2


async def test_samples_map_to_n_and_vote(closing: list[LLM]) -> None:
    interleaved = [c for pair in zip(chunks("7", index=0), chunks("8", index=1)) for c in pair]
    server = FakeServer([sse(*interleaved, *chunks("7", index=2))])
    result = await make(closing, server).run("?", output=int, samples=3)
    assert server.bodies[0]["n"] == 3 and server.bodies[0]["temperature"] == 0.7
    assert result.value == 7 and result.votes is not None and result.votes.winner.count == 2


# Dialects: how each constraint is sent

LARK = 'start: "SELECT " NAME\nNAME: /[a-z]+/'
DIALECT_CASES = [
    (
        Person,
        None,
        '{"name": "Ada", "age": 36}',
        lambda schema: {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": schema, "strict": True},
            }
        },
    ),
    (Person, "vllm", '{"name": "Ada", "age": 36}', lambda schema: {"structured_outputs": {"json": schema}}),
    (Person, "llama.cpp", '{"name": "Ada", "age": 36}', lambda schema: {"json_schema": schema}),
    (grammars.Regex(r"\d{3}"), None, "123", lambda _: {"structured_outputs": {"regex": r"\d{3}"}}),
    (grammars.Choice(["yes", "no"]), "vllm", "no", lambda _: {"structured_outputs": {"choice": ["yes", "no"]}}),
    (
        Literal["positive", "negative"],
        None,
        "negative",
        lambda _: {"structured_outputs": {"choice": ["positive", "negative"]}},
    ),
    (grammars.Lark(LARK), None, "SELECT x", lambda _: {"structured_outputs": {"grammar": LARK}}),
    (
        Literal["positive", 'say "no"'],
        "llama.cpp",
        "positive",
        lambda _: {"grammar": 'root ::= "positive" | "say \\"no\\""'},
    ),
]
CONSTRAINT_FIELDS = {"response_format", "structured_outputs", "json_schema", "grammar"}


@pytest.mark.parametrize(("output", "dialect", "reply", "expected"), DIALECT_CASES)
async def test_each_dialect_sends_the_constraint_in_its_own_fields(
    closing: list[LLM], output: Any, dialect: Any, reply: str, expected: Callable[[Any], dict[str, Any]]
) -> None:
    server = FakeServer([completion(reply)])
    llm = make(closing, server, dialect=dialect)
    value = await llm.generate("?", output=output)
    assert value == (Person(name="Ada", age=36) if output is Person else reply)
    body = server.bodies[0]
    schema = sdk.outputs.output_spec(output).json_schema
    assert {k: v for k, v in body.items() if k in CONSTRAINT_FIELDS} == expected(schema)


async def test_dialect_none_sends_no_constraint_but_still_validates(closing: list[LLM]) -> None:
    server = FakeServer([completion("123"), completion("12a")])
    llm = make(closing, server, dialect="none")
    assert await llm.generate("?", output=grammars.Regex(r"\d{3}")) == "123"
    with pytest.raises(sdk.ValidationError):
        await llm.generate("?", output=grammars.Regex(r"\d{3}"))
    assert not any(CONSTRAINT_FIELDS & set(body) for body in server.bodies)


@pytest.mark.parametrize(
    ("output", "dialect", "options"),
    [
        (grammars.Regex(r"\d+"), "openai", {}),
        (Literal["a", "b"], "openai", {}),
        (grammars.Lark(LARK), "llama.cpp", {}),
        (Person, None, {"reasoning": True}),
    ],
)
async def test_a_constraint_the_dialect_cannot_say_is_a_request_error_before_sending(
    closing: list[LLM], output: Any, dialect: Any, options: dict[str, Any]
) -> None:
    server = FakeServer([])
    with pytest.raises(sdk.RequestError) as caught:
        await make(closing, server, dialect=dialect).run("?", output=output, **options)
    assert caught.value.field == "dialect" and "allow_unconstrained" in str(caught.value)
    assert server.requests == []


async def test_allow_unconstrained_sends_it_bare_and_validates_locally(closing: list[LLM]) -> None:
    server = FakeServer([completion("Thinking.\nAnswer: 41"), completion("41")])
    llm = make(closing, server, dialect="openai", allow_unconstrained=True)
    result = await llm.run("?", output=int, reasoning=True)
    assert (result.value, result.reasoning) == (41, "Thinking.")
    assert await llm.generate("?", output=grammars.Regex(r"\d+")) == "41"
    assert not any(CONSTRAINT_FIELDS & set(body) for body in server.bodies)


# Sampling parameters


async def test_sampling_controls_map_to_request_fields(closing: list[LLM]) -> None:
    server = FakeServer([completion("hi")])
    await make(closing, server, dialect="vllm").run(
        "?",
        temperature=0.5,
        top_p=0.9,
        top_k=40,
        min_p=0.05,
        repetition_penalty=1.1,
        presence_penalty=0.5,
        seed=3,
        stop=["END"],
        max_tokens=20,
    )
    body = server.bodies[0]
    expected: dict[str, object] = {
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 40,
        "min_p": 0.05,
        "repetition_penalty": 1.1,
    }
    expected |= {"presence_penalty": 0.5, "seed": 3, "stop": ["END"], "max_tokens": 20}
    assert {k: body[k] for k in expected} == expected
    assert "n" not in body and "frequency_penalty" not in body and "logprobs" not in body


async def test_llama_cpp_names_its_repetition_penalty_its_own_way(closing: list[LLM]) -> None:
    server = FakeServer([completion("hi")])
    await make(closing, server, dialect="llama.cpp").run("?", repetition_penalty=1.2)
    assert server.bodies[0]["repeat_penalty"] == 1.2 and "repetition_penalty" not in server.bodies[0]


async def test_beam_search_is_refused_by_name(closing: list[LLM]) -> None:
    server = FakeServer([])
    with pytest.raises(sdk.RequestError) as caught:
        await make(closing, server).run("?", output=int, num_beams=2)
    assert caught.value.field == "num_beams" and server.requests == []


# Local validation: a server that ignored the constraint


@pytest.mark.parametrize(
    "text",
    [
        '{\n  "name": "Ada",\n  "age": 36\n}',  # indented: outside the default whitespace policy
        '{"age": 36, "name": "Ada"}',  # keys in another order
        '{"name":"Ada","age":36.0}',  # a float spelling of an integer
    ],
)
async def test_a_valid_value_in_another_text_form_is_no_violation(closing: list[LLM], text: str) -> None:
    assert not sdk.outputs.output_spec(Person).constraint.accepts(text)  # type: ignore[union-attr]
    server = FakeServer([completion(text)])
    assert await make(closing, server).generate("?", output=Person) == Person(name="Ada", age=36)


@pytest.mark.parametrize(
    ("output", "text", "error_type"),
    [
        (Person, '{"name": "Ada", "age": 36, "nickname": "Countess"}', "constraint_violation"),  # Pydantic ignores it
        (Person, 'Sure! {"name": "Ada", "age": 36}', "json_invalid"),
        ({"type": "array", "maxItems": 2}, "[1, 2, 3]", "constraint_violation"),
        (grammars.Regex(r"\d{3}"), "12a", "constraint_violation"),
        (Literal["positive", "negative"], '"positive"', "constraint_violation"),
    ],
)
async def test_an_answer_outside_the_constraint_is_a_validation_error(
    closing: list[LLM], output: Any, text: str, error_type: str
) -> None:
    server = FakeServer([completion(text)])
    with pytest.raises(sdk.ValidationError) as caught:
        await make(closing, server, dialect="vllm").generate("?", output=output)
    assert caught.value.errors()[0]["type"] == error_type
    assert caught.value.text == text and caught.value.usage.completion_tokens == 7


async def test_the_violation_names_where_and_which_keyword(closing: list[LLM]) -> None:
    server = FakeServer([completion('{"name": "Ada", "age": 36, "nickname": "Countess"}')])
    with pytest.raises(sdk.ValidationError) as caught:
        await make(closing, server).generate("?", output=Person)
    (detail,) = caught.value.errors()
    assert detail["loc"] == () and "additionalProperties" in detail["msg"] and "nickname" in detail["msg"]


async def test_retries_feed_the_violation_back_and_succeed(closing: list[LLM]) -> None:
    server = FakeServer([completion('{"name": "Ada", "age": 36, "x": 1}'), completion('{"name": "Ada", "age": 36}')])
    result = await make(closing, server).run("Ada, 36.", output=Person, retries=1)
    assert result.value == Person(name="Ada", age=36) and result.num_attempts == 2
    assert result.usage.completion_tokens == 14
    feedback = server.bodies[1]["messages"]
    assert feedback[-2] == {"role": "assistant", "content": '{"name": "Ada", "age": 36, "x": 1}'}
    assert "additionalProperties" in feedback[-1]["content"]


async def test_a_violating_sample_is_left_out_of_the_vote(closing: list[LLM]) -> None:
    server = FakeServer([sse(*chunks("7", index=0), *chunks("seven", index=1), *chunks("7", index=2))])
    result = await make(closing, server).run("?", output=int, samples=3)
    assert result.value == 7 and result.votes is not None
    assert (result.votes.winner.count, result.votes.num_invalid) == (2, 1)


async def test_a_cut_completion_is_incomplete_not_a_violation(closing: list[LLM]) -> None:
    server = FakeServer([sse(*chunks('{"name": "Ad', finish="length"))])
    with pytest.raises(sdk.IncompleteOutputError):
        await make(closing, server).generate("?", output=Person)


# Errors, retries and backoff


@pytest.mark.parametrize(
    ("reply", "status", "error_type", "message"),
    [
        (error_reply(400, VLLM_BAD_REQUEST), 400, "BadRequestError", "Invalid JSON schema"),
        (
            error_reply(401, {"error": {"message": "Incorrect API key", "type": "invalid_request_error"}}),
            401,
            "invalid_request_error",
            "Incorrect API key",
        ),
        (httpx.Response(404, text="Not Found"), 404, None, "Not Found"),
    ],
)
async def test_an_error_reply_is_a_remote_error_and_not_retried(
    closing: list[LLM], reply: httpx.Response, status: int, error_type: str | None, message: str
) -> None:
    server = FakeServer([reply])
    with pytest.raises(RemoteError) as caught:
        await make(closing, server).generate("?", output=int)
    assert (caught.value.status_code, caught.value.error_type, caught.value.message) == (status, error_type, message)
    assert isinstance(caught.value, sdk.StencilError) and len(server.requests) == 1


async def test_429_and_503_are_retried_then_succeed(closing: list[LLM]) -> None:
    server = FakeServer(
        [
            error_reply(429, OPENAI_RATE_LIMIT, {"retry-after": "0"}),
            error_reply(503, LLAMA_CPP_UNAVAILABLE),
            completion("5"),
        ]
    )
    assert await make(closing, server, max_retries=2).generate("?", output=int) == 5
    assert len(server.requests) == 3


async def test_retries_run_out_with_the_last_error(closing: list[LLM]) -> None:
    server = FakeServer([error_reply(503, LLAMA_CPP_UNAVAILABLE)] * 3)
    with pytest.raises(RemoteError) as caught:
        await make(closing, server, max_retries=2).generate("?", output=int)
    assert (caught.value.status_code, caught.value.message) == (503, "Loading model")
    assert len(server.requests) == 3


async def test_connection_errors_are_retried_and_mapped(closing: list[LLM]) -> None:
    server = FakeServer([httpx.ConnectError("refused"), completion("5")])
    assert await make(closing, server, max_retries=1).generate("?", output=int) == 5
    failing = FakeServer([httpx.ConnectError("refused"), httpx.ConnectError("refused")])
    with pytest.raises(RemoteError) as caught:
        await make(closing, failing, max_retries=1).generate("?", output=int)
    assert caught.value.status_code is None and isinstance(caught.value.__cause__, httpx.ConnectError)


async def test_an_error_event_mid_stream_is_a_remote_error(closing: list[LLM]) -> None:
    event = {"error": {"message": "engine died", "type": "InternalServerError", "code": 500}}
    server = FakeServer([sse(*chunks("12", finish=None), event, usage=None, done=False)])
    with pytest.raises(RemoteError, match="engine died"):
        await make(closing, server).generate("?", output=int)


async def test_a_reply_that_ends_unfinished_is_a_remote_error(closing: list[LLM]) -> None:
    server = FakeServer([sse(*chunks("12", finish=None))])
    with pytest.raises(RemoteError, match="before completion 0 finished"):
        await make(closing, server).generate("?", output=int)


def test_retry_delay_honours_retry_after_and_backs_off_exponentially() -> None:
    assert [retry_delay(attempt, 0.5, None) for attempt in range(4)] == [0.5, 1.0, 2.0, 4.0]
    assert retry_delay(3, 0.5, "2") == 2.0
    assert retry_delay(0, 0.5, "3600") == MAX_RETRY_AFTER
    in_ten_seconds = email.utils.formatdate(time.time() + 10, usegmt=True)
    assert 8.0 < retry_delay(0, 0.5, in_ten_seconds) <= 10.0
    assert retry_delay(1, 0.5, "soon") == 1.0


# Cancellation and closing


class HangingStream(httpx.AsyncByteStream):
    """A reply that sends one chunk, then waits forever; it records being closed."""

    def __init__(self) -> None:
        self.first_sent = asyncio.Event()
        self.is_closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield f"data: {json.dumps(chunks('Once upon', finish=None, pieces=1)[1])}\n\n".encode()
        self.first_sent.set()
        await asyncio.Event().wait()

    async def aclose(self) -> None:
        self.is_closed = True


def hanging(stream: HangingStream) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=stream)


async def test_leaving_a_stream_early_closes_the_http_response(closing: list[LLM]) -> None:
    body = HangingStream()
    llm = make(closing, FakeServer([hanging(body)]))
    async for text in llm.stream("Tell a story."):
        assert text == "Once upon"
        break
    assert body.is_closed


async def test_cancelling_a_call_closes_the_http_response(closing: list[LLM]) -> None:
    body = HangingStream()
    llm = make(closing, FakeServer([hanging(body)]))
    task = asyncio.create_task(llm.generate("Tell a story."))
    await body.first_sent.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert body.is_closed


async def test_calls_after_aclose_raise_closed_error() -> None:
    llm = remote_llm(FakeServer([]))
    await llm.aclose()
    with pytest.raises(sdk.ClosedError):
        await llm.generate("?")


# Construction


async def test_base_url_builds_a_remote_backend_without_touching_the_network() -> None:
    llm = LLM(base_url=BASE_URL, model="m", api_key="k", dialect="vllm", timeout=5.0, max_retries=0)
    assert isinstance(llm.backend, RemoteBackend)
    assert (llm.backend.model, llm.backend.dialect, llm.backend.max_retries) == ("m", "vllm", 0)
    await llm.aclose()


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"api_key": "k"}, "api_key"),
        ({"allow_unconstrained": True}, "allow_unconstrained"),
        ({"base_url": BASE_URL, "dtype": "float32"}, "dtype"),
        ({"base_url": BASE_URL, "dialect": "sglang"}, "dialect"),
        ({"base_url": BASE_URL, "max_retries": -1}, "max_retries"),
        ({"base_url": BASE_URL, "timeout": 0}, "timeout"),
    ],
)
def test_remote_options_are_checked(options: dict[str, Any], field: str) -> None:
    with pytest.raises(sdk.RequestError) as caught:
        LLM(**options)
    assert caught.value.field == field


def test_the_sync_facade_runs_the_remote_backend() -> None:
    server = FakeServer([completion('{"name": "Ada", "age": 36}')])
    backend = RemoteBackend(BASE_URL, model="m", transport=httpx.MockTransport(server))
    with SyncLLM(backend=backend) as llm:
        assert llm.generate("?", output=Person) == Person(name="Ada", age=36)


async def test_logprobs_are_asked_for_and_summed_per_completion() -> None:
    tokens = [{"token": "4", "logprob": -0.25, "top_logprobs": []}, {"token": "2", "logprob": -0.5, "top_logprobs": []}]
    events = [
        {
            "choices": [
                {"index": 0, "delta": {"content": t["token"]}, "logprobs": {"content": [t]}, "finish_reason": None}
            ]
        }
        for t in tokens
    ]
    server = FakeServer([sse(*events, {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})])
    backend = RemoteBackend(BASE_URL, model="m", transport=httpx.MockTransport(server))
    request = BackendRequest(messages=[{"role": "user", "content": "?"}], params=SamplingParams(logprobs=2))
    updates = [update async for update in backend.stream(request)]
    await backend.aclose()
    assert server.bodies[0]["logprobs"] is True and server.bodies[0]["top_logprobs"] == 2
    output = updates[-1].output
    assert output is not None and output.text == "42" and output.outputs[0].cumulative_logprob == -0.75
    assert "".join(update.text for update in updates) == "42"


# Tools: OpenAI's fields out, `tool_calls` back (JSON and SSE), checked by the SDK's one reader


class Unit(Enum):
    CELSIUS = "celsius"
    FAHRENHEIT = "fahrenheit"


def get_weather(city: str, unit: Unit = Unit.CELSIUS) -> str:
    """The weather in a city."""
    return f"sunny in {city}, 20 {unit.value}"


async def get_country(city: str) -> str:
    """The country a city is in."""
    return {"Paris": "France"}.get(city, "unknown")


def call_chunks(*calls: tuple[str, str], pieces: int = 3, finish: str = "tool_calls") -> list[dict[str, Any]]:
    """Calls as OpenAI streams them: per call, its id and name once, then argument fragments."""
    found: list[dict[str, Any]] = [{"choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]}]
    for index, (name, arguments) in enumerate(calls):
        head = {"index": index, "id": f"call_{index}", "type": "function", "function": {"name": name, "arguments": ""}}
        found.append({"choices": [{"index": 0, "delta": {"tool_calls": [head]}, "finish_reason": None}]})
        size = max(1, -(-len(arguments) // pieces))
        for start in range(0, len(arguments), size):
            fragment = {"index": index, "function": {"arguments": arguments[start : start + size]}}
            found.append({"choices": [{"index": 0, "delta": {"tool_calls": [fragment]}, "finish_reason": None}]})
    found.append({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    return found


def json_calls(*calls: tuple[str, Any], content: str | None = None) -> httpx.Response:
    """A whole (not streamed) reply whose message holds `tool_calls`."""
    tool_calls = [
        {"id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": arguments}}
        for i, (name, arguments) in enumerate(calls)
    ]
    message = {"role": "assistant", "content": content, "tool_calls": tool_calls}
    body = {"choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}], "usage": {}}
    return httpx.Response(200, json=body)


async def test_tools_go_in_openai_fields_and_streamed_calls_come_back_validated(closing: list[LLM]) -> None:
    server = FakeServer([sse(*call_chunks(("get_weather", '{"city": "Paris", "unit": "fahrenheit"}')))])
    result = await make(closing, server).run("Weather in Paris?", tools=[get_weather], tool_choice="required")
    body = server.bodies[0]
    assert body["tools"] == [sdk.Tool.from_function(get_weather).to_openai()]
    assert (body["tool_choice"], body["parallel_tool_calls"]) == ("required", True)
    assert body["messages"] == [{"role": "user", "content": "Weather in Paris?"}]  # no tool text added
    (call,) = result.tool_calls
    assert result.value == [call] and call.name == "get_weather"
    assert call.arguments.unit is Unit.FAHRENHEIT and call.invoke() == "sunny in Paris, 20 fahrenheit"


async def test_a_named_choice_and_no_parallel_calls_are_sent_as_openai_spells_them(closing: list[LLM]) -> None:
    server = FakeServer([sse(*call_chunks(("get_country", '{"city": "Paris"}')))])
    llm = make(closing, server)
    result = await llm.run(
        "Country?", tools=[get_weather, get_country], tool_choice=get_country, parallel_tool_calls=False
    )
    assert server.bodies[0]["tool_choice"] == {"type": "function", "function": {"name": "get_country"}}
    assert server.bodies[0]["parallel_tool_calls"] is False
    assert await result.tool_calls[0].ainvoke() == "France"


async def test_calls_in_a_json_reply_are_read_with_object_or_text_arguments(closing: list[LLM]) -> None:
    reply = json_calls(("get_weather", {"city": "Oslo"}), ("get_country", '{"city": "Paris"}'), content="Checking.")
    result = await make(closing, FakeServer([reply])).run("?", tools=[get_weather, get_country])
    assert [(c.name, c.arguments.city) for c in result.tool_calls] == [
        ("get_weather", "Oslo"),
        ("get_country", "Paris"),
    ]
    assert result.text.startswith("<tool_call>")  # content beside calls has no place in the call format


async def test_streamed_calls_are_yielded_whole_as_each_one_completes(closing: list[LLM]) -> None:
    calls = (("get_weather", '{"city": "Paris"}'), ("get_country", '{"city": "Rome"}'))
    server = FakeServer([sse(*call_chunks(*calls, pieces=4))])
    stream = make(closing, server).stream("?", tools=[get_weather, get_country], tool_choice="required")
    partials = [partial async for partial in stream]
    assert [[call.name for call in partial] for partial in partials] == [
        ["get_weather"],
        ["get_weather", "get_country"],
        ["get_weather", "get_country"],
    ]
    assert stream.result is not None and [c.id for c in stream.result.tool_calls] == [c.id for c in partials[1]]


@pytest.mark.parametrize(
    ("reply", "error_type", "loc"),
    [
        (sse(*call_chunks(("get_time", "{}"))), "tool_call_format", ()),  # no such tool
        (sse(*call_chunks(("get_weather", '{"city": "Paris", "unit": "kelvin"}'))), "enum", ("tool_calls", 0)),
        (sse(*call_chunks(("get_weather", "[1]"))), "tool_call_format", ()),  # arguments not an object
        (completion("It is sunny."), "tool_choice", ("tool_calls",)),  # text where a call is required
        (json_calls(("get_weather", {"city": "A"}), ("get_weather", {"city": "B"})), "tool_choice", ("tool_calls",)),
    ],
)
async def test_calls_the_request_does_not_allow_are_validation_errors(
    closing: list[LLM], reply: httpx.Response, error_type: str, loc: tuple[Any, ...]
) -> None:
    llm = make(closing, FakeServer([reply]))
    with pytest.raises(sdk.ValidationError) as caught:
        await llm.run("?", tools=[get_weather], tool_choice="required", parallel_tool_calls=False)
    (detail, *_) = caught.value.errors()
    assert detail["type"] == error_type and tuple(detail["loc"][: len(loc)]) == loc


async def test_a_broken_call_fails_the_stream_with_a_validation_error(closing: list[LLM]) -> None:
    server = FakeServer([sse(*call_chunks(("get_time", "{}")))])
    stream = make(closing, server).stream("?", tools=[get_weather], tool_choice="required")
    with pytest.raises(sdk.ValidationError) as caught:
        [partial async for partial in stream]
    assert caught.value.errors()[0]["type"] == "tool_call_format"


async def test_a_bad_call_is_re_asked_with_the_error_when_retries_allow(closing: list[LLM]) -> None:
    bad = sse(*call_chunks(("get_weather", '{"town": "Paris"}')))
    good = sse(*call_chunks(("get_weather", '{"city": "Paris"}')))
    server = FakeServer([bad, good])
    result = await make(closing, server).run("?", tools=[get_weather], tool_choice="required", retries=1)
    assert result.num_attempts == 2 and result.tool_calls[0].arguments.city == "Paris"
    feedback = server.bodies[1]["messages"]
    assert feedback[-2]["content"].startswith("<tool_call>") and "city" in feedback[-1]["content"]


async def test_a_text_answer_under_auto_is_checked_against_the_output(closing: list[LLM]) -> None:
    server = FakeServer([completion('{"name": "Ada", "age": 36}'), completion('{"name": "Ada"}')])
    llm = make(closing, server)
    assert await llm.generate("?", output=Person, tools=[get_weather]) == Person(name="Ada", age=36)
    with pytest.raises(sdk.ValidationError):
        await llm.generate("?", output=Person, tools=[get_weather])


async def test_a_call_cut_by_max_tokens_is_incomplete(closing: list[LLM]) -> None:
    server = FakeServer([sse(*call_chunks(("get_weather", '{"city": "Paris", "unit": '), finish="length"))])
    with pytest.raises(sdk.IncompleteOutputError):
        await make(closing, server).run("?", tools=[get_weather], tool_choice="required")


async def test_the_agent_loop_sends_past_calls_and_results_in_openai_form(closing: list[LLM]) -> None:
    server = FakeServer([sse(*call_chunks(("get_country", '{"city": "Paris"}'))), completion("Paris is in France.")])
    result = await make(closing, server).run_tools("Which country is Paris in?", [get_country])
    assert result.value == "Paris is in France."
    user, assistant, tool_result = server.bodies[1]["messages"]
    assert user == {"role": "user", "content": "Which country is Paris in?"}
    (call,) = assistant["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"] == {"name": "get_country", "arguments": '{"city": "Paris"}'}
    assert tool_result == {"role": "tool", "tool_call_id": call["id"], "content": "France"}


def test_template_variables_are_refused_since_the_server_renders_the_prompt() -> None:
    request = BackendRequest(
        messages=[{"role": "user", "content": "?"}], params=SamplingParams(), template_variables={"tools": []}
    )
    with pytest.raises(sdk.RequestError) as caught:
        request_payload(request, None)
    assert caught.value.field == "template_variables"


# Retries for every output kind: a remote server may break any constraint


@pytest.mark.parametrize(
    ("output", "bad", "good", "value"),
    [
        (grammars.Regex(r"\d{3}"), "12a", "123", "123"),
        (grammars.Choice(["red", "green"]), "blue", "red", "red"),
        ({"type": "array", "maxItems": 1}, "[1, 2]", "[1]", [1]),
    ],
)
async def test_retries_re_ask_a_violation_of_any_output_kind(
    closing: list[LLM], output: Any, bad: str, good: str, value: Any
) -> None:
    server = FakeServer([completion(bad), completion(good)])
    result = await make(closing, server, dialect="vllm").run("?", output=output, retries=1)
    assert (result.value, result.num_attempts) == (value, 2)
    assert server.bodies[1]["messages"][-2] == {"role": "assistant", "content": bad}


async def test_locally_retries_still_need_an_output_that_can_fail() -> None:
    async with LLM(backend=sdk.backends.ScriptedBackend(["123"])) as llm:
        with pytest.raises(sdk.RequestError) as caught:
            await llm.run("?", output=grammars.Regex(r"\d{3}"), retries=1)
    assert caught.value.field == "retries"
