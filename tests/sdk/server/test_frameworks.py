"""Agent frameworks, unchanged, against a real server on the embedded model: Instructor (TOOLS and
JSON_SCHEMA modes) and pydantic-ai (an `Agent` with a Pydantic `output_type` and a Python tool),
each returning a valid typed value. The server must also understand every field they send: an
"ignoring unknown request field" warning in its log fails the test.

SmolLM2-135M decodes greedily and, offered `lookup_age` beside pydantic-ai's `final_result` tool with
`tool_choice: "required"`, calls `lookup_age` again after every result until the agent's request
limit: the model's choice, not the wire format. The agent therefore offers its tool once, through
pydantic-ai's own `prepare` hook, so the run is a call, its result, then `final_result`.
"""

from __future__ import annotations

import logging

import instructor
import jsonschema
import openai
import pydantic
import pytest
from pydantic_ai import Agent, RunContext, UsageLimits
from pydantic_ai.messages import ModelResponse, ToolCallPart, ToolReturnPart
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider
from pydantic_ai.tools import ToolDefinition

from tests.sdk.server.conftest import RunningServer

pytestmark = pytest.mark.slow

PROMPT = "Ada Lovelace was 36."
AGENT_PROMPT = "How old is Ada Lovelace? Look it up, then give her name and age."
AGE = 36


class Person(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=20)
    age: int = pydantic.Field(ge=0, le=130)


def unknown_fields(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The server's "ignoring unknown request field" warnings so far."""
    return [record.getMessage() for record in caplog.records if "unknown request field" in record.getMessage()]


@pytest.mark.parametrize("mode", [instructor.Mode.TOOLS, instructor.Mode.JSON_SCHEMA], ids=["tools", "json_schema"])
async def test_instructor(
    smollm2_server: RunningServer, mode: instructor.Mode, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="stencil.server")
    async with openai.AsyncOpenAI(base_url=smollm2_server.base_url, api_key="unused", max_retries=0) as opened:
        client = instructor.from_openai(opened, mode=mode)
        person = await client.chat.completions.create(
            model=smollm2_server.model,
            response_model=Person,
            messages=[{"role": "user", "content": PROMPT}],
            max_tokens=40,
            max_retries=0,  # a value that fails validation raises instead of being asked for again
        )
    assert isinstance(person, Person)
    jsonschema.validate(person.model_dump(), Person.model_json_schema())
    assert unknown_fields(caplog) == []


def person_agent(server: RunningServer, client: openai.AsyncOpenAI, looked_up: list[str]) -> Agent[None, Person]:
    """An agent answering a `Person`, with a `lookup_age` tool offered until it is called once."""
    model = OpenAIChatModel(server.model, provider=OpenAIProvider(openai_client=client))
    agent: Agent[None, Person] = Agent(model, output_type=Person, model_settings={"max_tokens": 60})

    async def until_called(ctx: RunContext[None], tool: ToolDefinition) -> ToolDefinition | None:
        return None if looked_up else tool

    @agent.tool_plain(prepare=until_called)
    def lookup_age(name: str) -> int:
        """The age of a person, by name."""
        looked_up.append(name)
        return AGE

    return agent


def tool_names_called(responses: list[ModelResponse]) -> list[str]:
    return [part.tool_name for response in responses for part in response.parts if isinstance(part, ToolCallPart)]


@pytest.mark.parametrize("streaming", [False, True], ids=["run", "run_stream"])
async def test_pydantic_ai_agent_with_a_tool(
    smollm2_server: RunningServer, streaming: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="stencil.server")
    looked_up: list[str] = []
    limits = UsageLimits(request_limit=3)
    async with openai.AsyncOpenAI(base_url=smollm2_server.base_url, api_key="unused") as client:
        agent = person_agent(smollm2_server, client, looked_up)
        if streaming:
            async with agent.run_stream(AGENT_PROMPT, usage_limits=limits) as run:
                person = await run.get_output()
            messages = run.all_messages()
        else:
            result = await agent.run(AGENT_PROMPT, usage_limits=limits)
            person, messages = result.output, result.all_messages()
    assert isinstance(person, Person)
    jsonschema.validate(person.model_dump(), Person.model_json_schema())
    assert len(looked_up) == 1
    responses = [message for message in messages if isinstance(message, ModelResponse)]
    assert tool_names_called(responses) == ["lookup_age", "final_result"]
    returns = [part for message in messages for part in message.parts if isinstance(part, ToolReturnPart)]
    assert returns[0].tool_name == "lookup_age" and returns[0].content == AGE
    assert unknown_fields(caplog) == []
