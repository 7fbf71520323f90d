"""The server on the embedded model, through the real `openai` client: every structured-output
dialect, `parse`, tools (whole and streamed), n > 1. Requests run concurrently where they can, so the
engine batches them (and the test stays short)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import jsonschema
import openai
import pydantic
import pytest

import grammars
from tests.sdk.server.conftest import RunningServer

pytestmark = pytest.mark.slow

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
PROMPT = [{"role": "user", "content": "Ada Lovelace was 36. Reply with JSON."}]
LARK = 'start: "yes" | "no"'
GBNF = 'root ::= ("yes" | "no")'
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
TOOL_PROMPT = [{"role": "user", "content": "What is the weather in Paris?"}]


class Person(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=20)
    age: int = pydantic.Field(ge=0, le=130)


@pytest.fixture
async def client(smollm2_server: RunningServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=smollm2_server.base_url, api_key="unused", max_retries=0) as opened:
        yield opened


def is_person(text: str) -> bool:
    try:
        jsonschema.validate(json.loads(text), PERSON)
    except (ValueError, jsonschema.ValidationError):
        return False
    return True


def is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


# (dialect, request fields, check of the answer text)
DIALECTS: list[tuple[str, dict[str, Any], Any]] = [
    ("openai json_object", {"response_format": {"type": "json_object"}}, is_json_object),
    (
        "openai json_schema",
        {"response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON, "strict": True}}},
        is_person,
    ),
    ("llama.cpp json_object + schema", {"response_format": {"type": "json_object", "schema": PERSON}}, is_person),
    ("llama.cpp json_schema", {"extra_body": {"json_schema": PERSON}}, is_person),
    ("llama.cpp grammar", {"extra_body": {"grammar": GBNF}}, lambda text: text in ("yes", "no")),
    ("vLLM json", {"extra_body": {"structured_outputs": {"json": PERSON}}}, is_person),
    ("vLLM regex", {"extra_body": {"structured_outputs": {"regex": "[0-9]{2}"}}}, re.compile("[0-9]{2}").fullmatch),
    ("vLLM choice", {"extra_body": {"structured_outputs": {"choice": ["cat", "dog"]}}}, {"cat", "dog"}.__contains__),
    ("vLLM grammar", {"extra_body": {"structured_outputs": {"grammar": LARK}}}, lambda text: text in ("yes", "no")),
    ("vLLM json_object", {"extra_body": {"structured_outputs": {"json_object": True}}}, is_json_object),
    ("vLLM guided_json", {"extra_body": {"guided_json": PERSON}}, is_person),
    ("vLLM guided_regex", {"extra_body": {"guided_regex": "[A-Z][a-z]+"}}, re.compile("[A-Z][a-z]+").fullmatch),
    ("vLLM guided_choice", {"extra_body": {"guided_choice": ["red", "blue"]}}, {"red", "blue"}.__contains__),
    ("vLLM guided_grammar", {"extra_body": {"guided_grammar": LARK}}, lambda text: text in ("yes", "no")),
]


async def test_every_dialect_is_enforced(client: openai.AsyncOpenAI, smollm2_server: RunningServer) -> None:
    async def ask(fields: dict[str, Any]) -> Any:
        return await client.chat.completions.create(
            model=smollm2_server.model, messages=PROMPT, max_tokens=40, **fields
        )

    completions = await asyncio.gather(*(ask(fields) for _, fields, _ in DIALECTS))
    for (dialect, _, check), completion in zip(DIALECTS, completions):
        text = completion.choices[0].message.content
        assert completion.choices[0].finish_reason == "stop", dialect
        assert check(text), f"{dialect}: {text!r}"
    assert grammars.compile(grammars.GBNF(GBNF)).accepts(completions[4].choices[0].message.content)


async def test_parse_returns_the_pydantic_model(client: openai.AsyncOpenAI, smollm2_server: RunningServer) -> None:
    completion = await client.chat.completions.parse(
        model=smollm2_server.model, messages=PROMPT, response_format=Person, max_tokens=40
    )
    assert isinstance(completion.choices[0].message.parsed, Person)


async def test_n_completions_in_one_request(client: openai.AsyncOpenAI, smollm2_server: RunningServer) -> None:
    completion = await client.chat.completions.create(
        model=smollm2_server.model,
        messages=PROMPT,
        n=3,
        max_tokens=40,
        seed=0,
        response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}},
    )
    assert sorted(choice.index for choice in completion.choices) == [0, 1, 2]
    assert all(is_person(choice.message.content or "") for choice in completion.choices)


@pytest.mark.parametrize(("tool_choice", "finish_reason"), [("required", "tool_calls"), (None, "stop")])
async def test_forced_tool_calls(
    client: openai.AsyncOpenAI, smollm2_server: RunningServer, tool_choice: str | None, finish_reason: str
) -> None:
    choice: Any = tool_choice or {"type": "function", "function": {"name": "get_weather"}}
    completion = await client.chat.completions.create(
        model=smollm2_server.model, messages=TOOL_PROMPT, tools=[WEATHER_TOOL], tool_choice=choice, max_tokens=60
    )
    answer = completion.choices[0]
    assert answer.finish_reason == finish_reason
    assert answer.message.content is None and answer.message.tool_calls
    for call in answer.message.tool_calls:
        assert call.id.startswith("call_") and call.type == "function"
        assert call.function.name == "get_weather"
        jsonschema.validate(json.loads(call.function.arguments), WEATHER_TOOL["function"]["parameters"])


async def test_streamed_tool_calls_reassemble(client: openai.AsyncOpenAI, smollm2_server: RunningServer) -> None:
    request: dict[str, Any] = {
        "model": smollm2_server.model,
        "messages": TOOL_PROMPT,
        "tools": [WEATHER_TOOL],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "max_tokens": 60,
    }
    whole = (await client.chat.completions.create(**request)).choices[0]
    stream = await client.chat.completions.create(**request, stream=True)
    heads: list[tuple[str, str]] = []
    arguments = ""
    finish_reasons = []
    async for chunk in stream:
        delta = chunk.choices[0].delta
        assert delta.content is None
        for call in delta.tool_calls or []:
            assert call.index == 0
            if call.id is not None:
                assert call.function is not None and call.function.name and call.type == "function"
                heads.append((call.id, call.function.name))
            elif call.function is not None:
                assert call.function.name is None
            arguments += (call.function.arguments or "") if call.function else ""
        if chunk.choices[0].finish_reason:
            finish_reasons.append(chunk.choices[0].finish_reason)
    assert [name for _, name in heads] == ["get_weather"] and heads[0][0].startswith("call_")
    assert finish_reasons == ["tool_calls"]
    assert whole.message.tool_calls is not None
    assert arguments == whole.message.tool_calls[0].function.arguments  # greedy: the same call


async def test_history_with_tool_results_and_auto(client: openai.AsyncOpenAI, smollm2_server: RunningServer) -> None:
    history: list[Any] = [
        *TOOL_PROMPT,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"sky": "sunny", "celsius": 21}'},
    ]
    completion = await client.chat.completions.create(
        model=smollm2_server.model, messages=history, tools=[WEATHER_TOOL], tool_choice="auto", max_tokens=30
    )
    answer = completion.choices[0]
    if answer.message.tool_calls:
        assert answer.finish_reason == "tool_calls" and answer.message.content is None
        for call in answer.message.tool_calls:
            jsonschema.validate(json.loads(call.function.arguments), WEATHER_TOOL["function"]["parameters"])
    else:
        assert answer.message.content and not answer.message.content.startswith("<tool_call>")
        assert answer.finish_reason in ("stop", "length")


async def test_a_cut_tool_call_is_no_call(client: openai.AsyncOpenAI, smollm2_server: RunningServer) -> None:
    completion = await client.chat.completions.create(
        model=smollm2_server.model, messages=TOOL_PROMPT, tools=[WEATHER_TOOL], tool_choice="required", max_tokens=3
    )
    answer = completion.choices[0]
    assert answer.finish_reason == "length"
    assert answer.message.tool_calls is None and answer.message.content is None
