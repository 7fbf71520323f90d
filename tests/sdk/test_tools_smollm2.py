"""Tool calling on the embedded SmolLM2-135M: every call names a known tool with valid arguments."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Literal

import jsonschema
import pytest
from pydantic import BaseModel, Field

from sdk import LLM
from sdk.backends import LocalBackend
from sdk.tools import toolset

pytestmark = pytest.mark.slow  # the real model

MAX_TOKENS = 160


class Priority(Enum):
    LOW = "low"
    HIGH = "high"


class Address(BaseModel):
    street: str = Field(max_length=40)
    city: str = Field(max_length=30)


class CreateContact(BaseModel):
    """Create a contact (a nested model, referenced through $defs)."""

    name: str = Field(max_length=30)
    address: Address
    phone: str | None = None


def create_ticket(title: str, priority: Priority, tags: list[str] | None = None) -> str:
    """Open a support ticket.

    Args:
        title: a short title.
        priority: how urgent it is.
        tags: optional labels.
    """
    return "ok"


def get_weather(city: str, unit: Literal["celsius", "fahrenheit"] = "celsius") -> str:
    """The weather in a city."""
    return "sunny"


RAW = {
    "type": "function",
    "function": {
        "name": "convert",
        "description": "Convert an amount between currencies.",
        "parameters": {
            "type": "object",
            "properties": {"amount": {"type": "number"}, "to": {"$ref": "#/$defs/Currency"}},
            "required": ["amount", "to"],
            "$defs": {"Currency": {"enum": ["EUR", "USD", "JPY"]}},
        },
    },
}
TOOLS = [get_weather, create_ticket, CreateContact, RAW]
PROMPTS = [
    "What is the weather in Paris?",
    "The printer is on fire, open an urgent ticket.",
    "Add Ada Lovelace, 12 St James's Square, London, to my contacts.",
    "How much is 20 dollars in euros?",
]


@pytest.fixture(scope="module")
def llm() -> Iterator[LLM]:
    client = LLM()
    yield client
    assert isinstance(client.backend, LocalBackend)
    client.backend.close()


async def test_required_calls_name_known_tools_with_valid_arguments(llm: LLM) -> None:
    schemas = {tool.name: tool.parameters for tool in toolset(TOOLS)}
    results = await asyncio.gather(
        *(llm.run(prompt, tools=TOOLS, tool_choice="required", max_tokens=MAX_TOKENS) for prompt in PROMPTS)
    )
    for prompt, result in zip(PROMPTS, results):
        assert result.tool_calls, prompt
        for call in result.tool_calls:
            assert call.name in schemas, prompt
            jsonschema.validate(json.loads(call.arguments_json), schemas[call.name])


async def test_named_choice_calls_that_tool(llm: LLM) -> None:
    calls = await llm.generate(PROMPTS[2], tools=TOOLS, tool_choice=CreateContact, max_tokens=MAX_TOKENS)
    assert [call.name for call in calls] == ["CreateContact"]
    assert isinstance(calls[0].arguments, CreateContact)


async def test_auto_gives_text_or_valid_calls(llm: LLM) -> None:
    result = await llm.run(PROMPTS[0], tools=TOOLS, max_tokens=MAX_TOKENS)
    if result.tool_calls:
        assert {call.name for call in result.tool_calls} <= {tool.name for tool in toolset(TOOLS)}
    else:
        assert isinstance(result.value, str) and not result.value.startswith("<tool_call>")


def test_agent_example_answers_from_the_tools() -> None:
    path = Path(__file__).resolve().parents[2] / "examples" / "agent.py"
    spec = importlib.util.spec_from_file_location("agent_example", path)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)

    async def answer() -> object:
        async with LLM() as llm:
            result = await llm.run_tools(
                example.QUESTION, [example.get_country, example.get_population], output=example.Answer, max_turns=3
            )
        return result.value

    value = asyncio.run(answer())
    assert isinstance(value, example.Answer)
    assert (value.country, value.population) == ("Germany", example.POPULATIONS["Germany"])
