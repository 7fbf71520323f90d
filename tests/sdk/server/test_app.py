"""The server over HTTP with the toy engine: wire format, streaming, errors, metrics (fast).

The toy model writes garbage quickly, so what is checked here is the protocol, and that the
constraint holds: the real model's answers are in test_app_smollm2.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest

from tests.sdk.server.conftest import RunningServer

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.fixture
async def client(fake_server: RunningServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=fake_server.base_url, api_key="unused", max_retries=0) as opened:
        yield opened


@pytest.fixture
async def http(fake_server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fake_server.base_url.removesuffix("/v1"), timeout=60) as opened:
        yield opened


def chat_body(model: str, **fields: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "Count."}], "max_tokens": 8, **fields}


async def sse_events(http: httpx.AsyncClient, path: str, body: dict[str, Any]) -> list[Any]:
    """The decoded `data:` events of a streamed response; "[DONE]" kept as the string."""
    events: list[Any] = []
    async with http.stream("POST", path, json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line:
                assert line.startswith("data: ")
                data = line.removeprefix("data: ")
                events.append(data if data == "[DONE]" else json.loads(data))
    return events


async def test_models_and_health(
    client: openai.AsyncOpenAI, http: httpx.AsyncClient, fake_server: RunningServer
) -> None:
    models = await client.models.list()
    assert [model.id for model in models.data] == [fake_server.model]
    assert (await client.models.retrieve(fake_server.model)).id == fake_server.model
    assert (await http.get("/health")).json() == {"status": "ok"}


async def test_unknown_model_and_route_are_404s(client: openai.AsyncOpenAI, http: httpx.AsyncClient) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.param == "model"
    response = await http.get("/v1/nothing")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"temperature": -1}, "temperature"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "messages[0].content[0]",
        ),
        ({"response_format": {"type": "yaml"}}, "response_format.type"),
        ({"guided_regex": "(unclosed"}, "guided_regex"),
        ({"guided_json": {"type": "string", "format": "no-such-format"}}, "guided_json"),
        ({"grammar": 'root ::= "a"', "guided_choice": ["a"]}, "guided_choice"),
        ({"guided_choice": ["a"], "stop": ["x"]}, "stop"),
        ({"tool_choice": "required"}, "tool_choice"),
        (
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{oops"}}
                        ],
                    },
                ]
            },
            "messages[1].tool_calls[0].function.arguments",
        ),
    ],
)
async def test_bad_requests_are_400s_naming_the_field(
    http: httpx.AsyncClient, fake_server: RunningServer, fields: dict[str, Any], param: str
) -> None:
    response = await http.post("/v1/chat/completions", json=chat_body(fake_server.model, **fields))
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert param in error["message"]


async def test_bad_request_maps_to_the_client_error(client: openai.AsyncOpenAI, fake_server: RunningServer) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(
            model=fake_server.model,
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"guided_json": {"$dynamicRef": "#x"}},
        )
    assert caught.value.param == "guided_json"
    assert caught.value.code == "unsupported_schema"


async def test_a_prompt_over_the_context_window_is_a_400_with_the_counts(
    http: httpx.AsyncClient, fake_server: RunningServer
) -> None:
    long_text = "word " * 2000
    body = chat_body(fake_server.model, messages=[{"role": "user", "content": long_text}])
    response = await http.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("messages", "context_length_exceeded")
    assert re.search(r"\d+ tokens; the context window holds 512", error["message"])


async def test_unknown_fields_are_ignored(client: openai.AsyncOpenAI, fake_server: RunningServer) -> None:
    completion = await client.chat.completions.create(
        model=fake_server.model,
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=3,
        extra_body={"frobnicate": True},
    )
    assert completion.choices[0].finish_reason in ("stop", "length")


async def test_constrained_choices_with_logprobs(client: openai.AsyncOpenAI, fake_server: RunningServer) -> None:
    completion = await client.chat.completions.create(
        model=fake_server.model,
        messages=[{"role": "user", "content": "A number?"}],
        n=3,
        temperature=1.0,
        seed=1,
        logprobs=True,
        top_logprobs=5,
        extra_body={"guided_regex": "[0-9]{4}"},
    )
    assert [choice.index for choice in completion.choices] == [0, 1, 2]
    for choice in completion.choices:
        assert re.fullmatch("[0-9]{4}", choice.message.content or "")
        assert choice.finish_reason == "stop"
        assert choice.logprobs is not None and choice.logprobs.content
        # Inside the number only digits are allowed: no masked token is ever listed.
        for token in choice.logprobs.content[:4]:
            assert token.top_logprobs and all(alt.token.isdigit() for alt in token.top_logprobs)
            assert all(alt.logprob > float("-inf") for alt in token.top_logprobs)
    assert completion.usage is not None and completion.usage.completion_tokens >= 12


async def test_chat_stream_follows_openai_rules(http: httpx.AsyncClient, fake_server: RunningServer) -> None:
    body = chat_body(fake_server.model, max_tokens=12, guided_regex="[a-z]{3,20}", n=2, temperature=1.0, seed=7)
    whole = (await http.post("/v1/chat/completions", json=body)).json()
    events = await sse_events(
        http, "/v1/chat/completions", {**body, "stream": True, "stream_options": {"include_usage": True}}
    )
    assert events[-1] == "[DONE]"
    usage_chunk, chunks = events[-2], events[:-2]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"] == whole["usage"]
    for index in (0, 1):
        mine = [chunk["choices"][0] for chunk in chunks if chunk["choices"][0]["index"] == index]
        assert mine[0]["delta"] == {"role": "assistant"}
        contents = [choice["delta"]["content"] for choice in mine[1:] if "content" in choice["delta"]]
        assert all(contents), "a content delta is never empty"
        finishes = [choice["finish_reason"] for choice in mine if choice["finish_reason"] is not None]
        assert finishes == [whole["choices"][index]["finish_reason"]] and mine[-1]["finish_reason"] is not None
        assert "".join(contents) == whole["choices"][index]["message"]["content"]
    assert all(chunk["object"] == "chat.completion.chunk" and chunk["usage"] is None for chunk in chunks)


async def test_streaming_through_the_openai_client(client: openai.AsyncOpenAI, fake_server: RunningServer) -> None:
    stream = await client.chat.completions.create(
        model=fake_server.model,
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=10,
        stream=True,
        logprobs=True,
        extra_body={"guided_regex": "[0-9]+"},
    )
    text, num_logprobs, finish_reasons = "", 0, []
    async for chunk in stream:
        choice = chunk.choices[0]
        text += choice.delta.content or ""
        if choice.logprobs is not None and choice.logprobs.content:
            num_logprobs += len(choice.logprobs.content)
        if choice.finish_reason is not None:
            finish_reasons.append(choice.finish_reason)
    assert re.fullmatch("[0-9]+", text)
    assert len(finish_reasons) == 1
    assert num_logprobs >= 1


async def test_text_completions(client: openai.AsyncOpenAI, fake_server: RunningServer) -> None:
    completion = await client.completions.create(
        model=fake_server.model, prompt="Once upon", max_tokens=6, echo=True, extra_body={"guided_regex": "[a-z ]+"}
    )
    text = completion.choices[0].text
    assert text.startswith("Once upon") and re.fullmatch("[a-z ]+", text.removeprefix("Once upon"))
    with_logprobs = await client.completions.create(model=fake_server.model, prompt=[1, 2, 3], max_tokens=5, logprobs=2)
    logprobs = with_logprobs.choices[0].logprobs
    assert logprobs is not None and logprobs.tokens and logprobs.text_offset is not None
    assert "".join(logprobs.tokens) == with_logprobs.choices[0].text
    assert logprobs.text_offset[0] == 0 and len(logprobs.top_logprobs or []) == len(logprobs.tokens)
    with pytest.raises(openai.BadRequestError) as caught:
        await client.completions.create(model=fake_server.model, prompt="x", echo=True, logprobs=1)
    assert caught.value.param == "echo"


async def test_streamed_text_completion(http: httpx.AsyncClient, fake_server: RunningServer) -> None:
    body = {"model": fake_server.model, "prompt": "abc", "max_tokens": 8, "guided_regex": "[0-9]{5}"}
    whole = (await http.post("/v1/completions", json=body)).json()["choices"][0]
    events = await sse_events(http, "/v1/completions", {**body, "stream": True})
    assert events[-1] == "[DONE]"
    choices = [event["choices"][0] for event in events[:-1]]
    assert "".join(choice["text"] for choice in choices) == whole["text"]
    assert [choice["finish_reason"] for choice in choices if choice["finish_reason"]] == [whole["finish_reason"]]


async def test_metrics(http: httpx.AsyncClient, fake_server: RunningServer) -> None:
    await http.post("/v1/chat/completions", json=chat_body(fake_server.model, guided_regex="[0-9]{3}"))
    text = (await http.get("/metrics")).text
    for name in (
        "stencil_requests_total",
        "stencil_prompt_tokens_total",
        "stencil_completion_tokens_total",
        "stencil_time_to_first_token_seconds_bucket",
        "stencil_request_latency_seconds_count",
        "stencil_queue_depth",
        "stencil_kv_blocks_in_use",
        "stencil_mask_seconds_total",
    ):
        assert name in text
    served = re.search(r'stencil_requests_total\{endpoint="/v1/chat/completions",status="200"\} (\d+)', text)
    assert served is not None and float(served.group(1)) >= 1
    masked = re.search(r"^stencil_mask_seconds_total (\S+)$", text, re.MULTILINE)
    assert masked is not None and float(masked.group(1)) > 0
