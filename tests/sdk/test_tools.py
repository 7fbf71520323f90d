"""Tool calling: definitions, the format's constraint per tool_choice, parsing, history, the SDK surface."""

from __future__ import annotations

import inspect
import json
from collections.abc import AsyncGenerator
from enum import Enum

import pytest
from pydantic import BaseModel, Field, field_validator

import sdk
from runtime.engine.llm_engine import Engine
from runtime.engine.outputs import RequestUpdate
from runtime.engine.sequence import FinishReason
from runtime.errors import RequestError
from runtime.tokenizer import Tokenizer
from sdk import LLM, SyncLLM
from sdk.backends import Scripted, ScriptedBackend
from sdk.backends.base import BackendRequest
from sdk.backends.local import LocalBackend
from sdk.outputs import output_spec
from sdk.tools import (
    ArgumentsDelta,
    CallEnd,
    CallStart,
    ContentDelta,
    Tool,
    ToolCallFormatError,
    ToolCallParser,
    ToolChoice,
    ToolDefinitionError,
    ToolFormat,
    ToolHistoryError,
    detect_tool_format,
    parse_tool_output,
    render_call,
    resolve_tool_choice,
    tool_call_constraint,
    tool_prompt,
    toolset,
)
from tests.runtime.fakes import FakeRunner, smollm2_tokenizer
from tests.sdk.conftest import assert_pool_whole, fake_engine


class Unit(Enum):
    CELSIUS = "celsius"
    FAHRENHEIT = "fahrenheit"


def get_weather(city: str, unit: Unit = Unit.CELSIUS) -> str:
    """The weather in a city.

    Args:
        city: the city's name.
        unit: the temperature unit.
    """
    return f"sunny in {city}, 20 {unit.value}"


async def get_country(city: str) -> str:
    """The country a city is in."""
    return {"Paris": "France"}.get(city, "unknown")


class Search(BaseModel):
    """Search the web."""

    query: str = Field(max_length=40)
    max_results: int | None = None

    @field_validator("query")
    @classmethod
    def no_shouting(cls, value: str) -> str:
        if value.isupper():
            raise ValueError("no shouting")
        return value


RAW = {
    "type": "function",
    "function": {
        "name": "raw",
        "description": "Raw schema with its own $defs.",
        "parameters": {
            "type": "object",
            "properties": {"item": {"$ref": "#/$defs/Item"}},
            "required": ["item"],
            "$defs": {"Item": {"type": "integer"}},
        },
    },
}
OTHER_ITEM = Tool.from_schema(
    "other",
    {
        "type": "object",
        "properties": {"item": {"$ref": "#/$defs/Item"}},
        "required": ["item"],
        "$defs": {"Item": {"type": "string"}},
    },
)
TOOLS = toolset([get_weather, get_country, Search, RAW, OTHER_ITEM])
NAMES = {tool.name for tool in TOOLS}


# Definitions


def test_function_tool_takes_its_schema_and_descriptions_from_the_signature_and_docstring() -> None:
    tool = TOOLS.get("get_weather")
    assert tool is not None and tool.description == "The weather in a city."
    properties = tool.parameters["properties"]
    assert properties["city"]["description"] == "the city's name."
    assert tool.parameters["required"] == ["city"]
    assert tool.parameters["additionalProperties"] is False
    assert tool.to_openai()["function"]["name"] == "get_weather"


def test_model_and_openai_tools() -> None:
    search, raw = TOOLS.get("Search"), TOOLS.get("raw")
    assert search is not None and search.description == "Search the web." and search.model is Search
    assert raw is not None and raw.model is None and raw.parameters["$defs"] == {"Item": {"type": "integer"}}


@pytest.mark.parametrize(
    ("tools", "field"),
    [
        ([lambda x: x], "tools[0].x"),
        ([get_weather, get_weather], "tools[1].name"),
        ([{"type": "function", "function": {"name": "bad name", "parameters": {}}}], "tools[0].function.name"),
        (
            [RAW, {"type": "function", "function": {"name": "s", "parameters": {"type": "string"}}}],
            "tools[1].function.parameters",
        ),
        ([{"type": "retrieval"}], "tools[0].type"),
        ([42], "tools[0]"),
        ([], "tools"),
    ],
)
def test_bad_definitions_name_the_tool(tools: list[object], field: str) -> None:
    with pytest.raises(ToolDefinitionError) as caught:
        toolset(tools)
    assert caught.value.field == field


def test_unenforceable_schema_is_refused_unless_strict_is_false() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string", "format": "no-such-format"}}}
    with pytest.raises(ToolDefinitionError) as caught:
        toolset([{"name": "f", "parameters": schema}])
    assert caught.value.field == "tools[0].parameters"
    with pytest.warns(Warning):
        toolset([{"name": "f", "parameters": schema, "strict": False}])


# The constraint, per tool choice


def good_call() -> str:
    return render_call("get_weather", '{"city": "Paris", "unit": "fahrenheit"}')


@pytest.mark.parametrize(
    ("choice", "parallel", "text", "accepted"),
    [
        ("required", True, good_call(), True),
        ("required", True, good_call() + "\n" + render_call("raw", '{"item": 3}'), True),
        ("required", False, good_call() + "\n" + render_call("raw", '{"item": 3}'), False),
        ("required", True, "It is sunny.", False),
        ("required", True, render_call("raw", '{"item": "3"}'), False),  # raw's Item is an integer
        ("required", True, render_call("other", '{"item": "3"}'), True),  # other's Item is a string
        ("required", True, render_call("nope", "{}"), False),
        ("required", True, render_call("get_weather", '{"city": "Paris", "unit": "kelvin"}'), False),
        ("required", True, render_call("Search", '{"query": "x", "extra": 1}'), False),
        ("auto", True, "It is sunny.", True),
        ("auto", True, "", True),
        ("auto", True, good_call(), True),
        ("auto", True, "<tool_call> not a call", False),
        ("auto", True, "It is sunny." + good_call(), True),  # text that does not start with the marker
        ("get_weather", True, good_call(), True),
        ("get_weather", True, render_call("raw", '{"item": 3}'), False),
        ("get_weather", True, good_call() + "\n" + good_call(), False),
    ],
)
def test_constraint_accepts_exactly_the_format(choice: str, parallel: bool, text: str, accepted: bool) -> None:
    constraint = tool_call_constraint(TOOLS, resolve_tool_choice(choice, TOOLS), parallel=parallel, answer=None)
    assert constraint is not None
    assert constraint.accepts(text) is accepted


def test_auto_with_a_typed_output_is_the_value_or_calls() -> None:
    answer = output_spec(Search).constraint
    constraint = tool_call_constraint(TOOLS, ToolChoice("auto"), parallel=True, answer=answer)
    assert constraint is not None
    assert constraint.accepts('{"query": "x"}') and constraint.accepts(good_call())
    assert not constraint.accepts("free text")


def test_none_is_the_answer_constraint() -> None:
    assert tool_call_constraint(TOOLS, ToolChoice("none"), parallel=True, answer=None) is None


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (get_weather, ToolChoice("named", "get_weather")),
        (Search, ToolChoice("named", "Search")),
        ("raw", ToolChoice("named", "raw")),
        ({"type": "function", "function": {"name": "raw"}}, ToolChoice("named", "raw")),
        ("required", ToolChoice("required")),
    ],
)
def test_tool_choice_forms(choice: object, expected: ToolChoice) -> None:
    assert resolve_tool_choice(choice, TOOLS) == expected


@pytest.mark.parametrize(("choice", "tools"), [("missing", TOOLS), ("required", None), (3, TOOLS)])
def test_bad_tool_choice(choice: object, tools: object) -> None:
    with pytest.raises(RequestError) as caught:
        resolve_tool_choice(choice, tools)  # type: ignore[arg-type]
    assert caught.value.field == "tool_choice"


# Parsing


def test_parse_whole_outputs() -> None:
    two = good_call() + "\n" + render_call("raw", '{"item": 3}')
    parsed = parse_tool_output(two, NAMES)
    assert parsed.content is None
    assert [(c.name, json.loads(c.arguments)) for c in parsed.calls] == [
        ("get_weather", {"city": "Paris", "unit": "fahrenheit"}),
        ("raw", {"item": 3}),
    ]
    assert parse_tool_output("<tool_", NAMES).content == "<tool_"
    assert parse_tool_output("Hello", NAMES).calls == ()


@pytest.mark.parametrize(
    "text",
    [
        good_call()[:-2],
        render_call("nope", "{}"),
        good_call() + "\n\n",
        good_call().replace('"name"', '"nom"'),
        render_call("raw", "[1]"),
    ],
)
def test_broken_format_is_a_typed_error(text: str) -> None:
    with pytest.raises(ToolCallFormatError):
        parse_tool_output(text, NAMES)


@pytest.mark.parametrize("size", [1, 2, 5, 1000])
def test_streaming_parser_emits_each_call_once_and_its_arguments_in_fragments(size: int) -> None:
    arguments = ['{"city": "Pa\\"ris}", "unit": "celsius"}', '{"item": {"deep": [1, {"x": "}"}]}}']
    text = render_call("get_weather", arguments[0]) + "\n" + render_call("raw", arguments[1])
    parser = ToolCallParser()
    events = []
    for start in range(0, len(text), size):
        events += parser.feed(text[start : start + size])
    events += parser.finish()
    assert [e for e in events if isinstance(e, CallStart)] == [CallStart(0, "get_weather"), CallStart(1, "raw")]
    assert [e for e in events if isinstance(e, CallEnd)] == [CallEnd(0, arguments[0]), CallEnd(1, arguments[1])]
    for index in (0, 1):
        fragments = [e.text for e in events if isinstance(e, ArgumentsDelta) and e.index == index]
        assert all(fragments) and "".join(fragments) == arguments[index]
    assert not any(isinstance(e, ContentDelta) for e in events)
    starts = [i for i, e in enumerate(events) if isinstance(e, CallStart)]
    first_fragment = next(i for i, e in enumerate(events) if isinstance(e, ArgumentsDelta))
    assert starts[0] < first_fragment


def test_streaming_parser_holds_back_text_only_while_it_could_be_the_marker() -> None:
    parser = ToolCallParser()
    assert parser.feed("<tool") == []
    assert parser.feed("box is") == [ContentDelta("<toolbox is")]
    assert parser.feed(" here") == [ContentDelta(" here")]
    assert parser.finish() == []
    held = ToolCallParser()
    assert held.feed("<") == [] and held.finish() == [ContentDelta("<")]


# History and prompt


HISTORY = [
    {"role": "user", "content": "Where is Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_country", "arguments": '{"city": "Paris"}'}}
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "France"},
]


def test_generic_history_renders_calls_and_results_as_plain_messages() -> None:
    prompt = tool_prompt(HISTORY, TOOLS, tool_format=ToolFormat.GENERIC, mode="auto")
    system, user, assistant, result = prompt.messages
    assert system["role"] == "system" and "get_country: The country a city is in." in system["content"]
    assert user == HISTORY[0]
    assert assistant == {"role": "assistant", "content": render_call("get_country", '{"city": "Paris"}')}
    assert result == {
        "role": "user",
        "content": '<tool_response>\n{"name": "get_country", "content": "France"}\n</tool_response>',
    }
    assert prompt.template_variables == {}


def test_native_history_keeps_the_messages_for_the_template() -> None:
    prompt = tool_prompt(HISTORY, TOOLS, tool_format=ToolFormat.HERMES, mode="required")
    assert prompt.messages[1]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
    assert [t["function"]["name"] for t in prompt.template_variables["tools"]] == [t.name for t in TOOLS]
    assert detect_tool_format("{% if tools %}<tool_call>{% endif %}") is ToolFormat.HERMES
    assert detect_tool_format(None) is ToolFormat.GENERIC


def test_openai_history_keeps_the_messages_and_leaves_the_tools_to_the_server() -> None:
    prompt = tool_prompt(HISTORY, TOOLS, tool_format=ToolFormat.OPENAI, mode="required")
    assert prompt.messages[1]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
    assert len(prompt.messages) == len(HISTORY) and prompt.template_variables == {}


@pytest.mark.parametrize("arguments", ["{not json", "[1, 2]"])
def test_malformed_history_arguments_name_the_message(arguments: str) -> None:
    history = [dict(m) for m in HISTORY]
    history[1] = {
        **history[1],
        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": arguments}}],
    }
    with pytest.raises(ToolHistoryError) as caught:
        tool_prompt(history, None, tool_format=ToolFormat.GENERIC, mode="none")
    assert caught.value.message_index == 1
    assert caught.value.field == "messages[1].tool_calls[0].function.arguments"


# The SDK surface (scripted backend: the texts are what the "model" writes)


async def test_run_returns_validated_calls_that_invoke_their_functions() -> None:
    backend = ScriptedBackend([good_call() + "\n" + render_call("get_country", '{"city": "Paris"}')])
    async with LLM(backend=backend) as llm:
        result = await llm.run(
            "Weather and country of Paris?", tools=[get_weather, get_country], tool_choice="required"
        )
    first, second = result.tool_calls
    assert result.value == result.tool_calls
    assert first.name == "get_weather" and first.arguments.unit is Unit.FAHRENHEIT
    assert first.id.startswith("call_") and first.id != second.id
    assert first.invoke() == "sunny in Paris, 20 fahrenheit"
    assert await second.ainvoke() == "France"
    with pytest.raises(sdk.SDKError):
        second.invoke()  # async
    assert "get_weather" in backend.requests[0].messages[0]["content"]


async def test_auto_text_answer_has_no_calls_and_none_sends_no_tools() -> None:
    backend = ScriptedBackend(["It is sunny.", "Plain."])
    async with LLM(backend=backend) as llm:
        result = await llm.run("Weather?", tools=[get_weather])
        plain = await llm.run("Weather?", tools=[get_weather], tool_choice="none")
    assert (result.value, result.tool_calls) == ("It is sunny.", [])
    assert plain.value == "Plain." and backend.requests[1].constraint is None
    assert "get_weather" not in json.dumps(backend.requests[1].messages)


async def test_arguments_a_validator_rejects_are_a_validation_error_with_the_call_location() -> None:
    backend = ScriptedBackend([render_call("Search", '{"query": "LOUD"}')])
    async with LLM(backend=backend) as llm:
        with pytest.raises(sdk.ValidationError) as caught:
            await llm.run("Search", tools=[Search], tool_choice=Search)
    assert caught.value.details[0]["loc"][:3] == ("tool_calls", 0, "Search")


async def test_a_call_cut_by_max_tokens_is_incomplete() -> None:
    cut = Scripted(good_call()[:30], finish_reason=FinishReason.LENGTH)
    async with LLM(backend=ScriptedBackend([cut])) as llm:
        with pytest.raises(sdk.IncompleteOutputError):
            await llm.run("Weather?", tools=[get_weather], tool_choice="required")


async def test_stream_yields_calls_as_they_complete_with_their_final_ids() -> None:
    backend = ScriptedBackend([good_call() + "\n" + render_call("raw", '{"item": 3}')])
    async with LLM(backend=backend) as llm:
        stream = llm.stream("Weather?", tools=[get_weather, RAW], tool_choice="required")
        partials = [partial async for partial in stream]
    assert [len(p) for p in partials] == [1, 2, 2]
    assert stream.result is not None
    assert [c.id for c in partials[1]] == [c.id for c in stream.result.tool_calls]
    assert stream.result.tool_calls[1].arguments == {"item": 3}


async def test_stream_of_a_text_answer_streams_text() -> None:
    async with LLM(backend=ScriptedBackend(["<toolbox here"])) as llm:
        partials = [partial async for partial in llm.stream("Hi", tools=[get_weather])]
    assert partials[-1] == "<toolbox here" and all(isinstance(p, str) for p in partials)


async def test_run_tools_runs_the_calls_and_feeds_the_results_back() -> None:
    class Answer(BaseModel):
        country: str

    backend = ScriptedBackend([render_call("get_country", '{"city": "Paris"}'), '{"country": "France"}'])
    async with LLM(backend=backend) as llm:
        result = await llm.run_tools("Which country is Paris in?", [get_country], output=Answer)
    assert result.value == Answer(country="France")
    second_prompt = backend.requests[1].messages
    assert second_prompt[-1]["role"] == "user" and "France" in second_prompt[-1]["content"]
    assert result.usage.completion_tokens > 0 and len(backend.requests) == 2


async def test_run_tools_forces_an_answer_after_max_turns() -> None:
    backend = ScriptedBackend([render_call("get_country", '{"city": "Paris"}'), "France."])
    async with LLM(backend=backend) as llm:
        result = await llm.run_tools("Country?", [get_country], max_turns=1, tool_choice="required")
    assert result.value == "France." and backend.requests[1].constraint is None


async def test_conflicting_options_are_refused_before_generating() -> None:
    async with LLM(backend=ScriptedBackend([])) as llm:
        with pytest.raises(RequestError) as caught:
            await llm.run("x", tools=[get_weather], reasoning=True)
        assert caught.value.field == "reasoning"
        with pytest.raises(RequestError) as caught:
            await llm.run("x", tools=[get_weather], parallel_tool_calls="yes")  # type: ignore[typeddict-item]
        assert caught.value.field == "parallel_tool_calls"


def test_sync_run_tools_mirrors_the_async_one() -> None:
    assert inspect.signature(LLM.run_tools, eval_str=True) == inspect.signature(SyncLLM.run_tools, eval_str=True)


async def test_required_on_the_real_engine_writes_a_valid_call() -> None:
    """The fake model writes garbage; the constraint turns it into a valid call of a known tool."""
    engine = fake_engine()
    async with LLM(backend=LocalBackend(engine)) as llm:
        result = await llm.run("x", tools=[get_weather, RAW], tool_choice="required", max_tokens=200)
    assert result.tool_calls and {call.name for call in result.tool_calls} <= {"get_weather", "raw"}
    assert_pool_whole(engine)


# A model whose chat template has a tool format gets the tools through it

HERMES_TEMPLATE = """
{%- if tools %}<|im_start|>system
You may call functions. <tools>
{%- for tool in tools %}
{{ tool | tojson }}
{%- endfor %}
</tools><|im_end|>
{% endif %}
{%- for message in messages %}
{%- if message.role == "assistant" and message.tool_calls %}<|im_start|>assistant
{%- for call in message.tool_calls %}
<tool_call>
{"name": "{{ call.function.name }}", "arguments": {{ call.function.arguments | tojson }}}
</tool_call>
{%- endfor %}<|im_end|>
{% elif message.role == "tool" %}<|im_start|>user
<tool_response>
{{ message.content }}
</tool_response><|im_end|>
{% else %}<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""


def pick_unit(unit: Unit) -> str:
    """Pick a temperature unit (one enum argument: the fake model's call is short)."""
    return f"picked {unit.value}"


class PromptRecordingBackend(LocalBackend):
    """The local backend, keeping the text of each prompt the engine was fed."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.prompts: list[str] = []

    async def stream(self, request: BackendRequest) -> AsyncGenerator[RequestUpdate, None]:
        async for update in super().stream(request):
            if update.output is not None:
                self.prompts.append(self.engine.tokenizer.decode(update.output.prompt_token_ids))
            yield update


async def test_a_template_with_a_tool_format_renders_the_tools_and_history_itself() -> None:
    smollm2 = smollm2_tokenizer()
    tokenizer = Tokenizer(
        smollm2.backend,
        eos_token_ids=smollm2.eos_token_ids,
        bos_token_id=smollm2.bos_token_id,
        pad_token_id=smollm2.pad_token_id,
        chat_template=HERMES_TEMPLATE,
    )
    engine = Engine(FakeRunner(num_blocks=512, block_size=4), tokenizer)  # type: ignore[arg-type]  # a toy runner
    backend = PromptRecordingBackend(engine)
    assert backend.tool_format is ToolFormat.HERMES
    async with LLM(backend=backend) as llm:
        result = await llm.run_tools("Which unit?", [pick_unit], max_turns=1, tool_choice="required", max_tokens=100)
    first, second = backend.prompts
    assert "<tools>" in first and '"name": "pick_unit"' in first
    assert "You can call these tools" not in first  # the generic instruction stays out
    assert "<tool_call>" not in first  # no past call yet
    assert '<tool_call>\n{"name": "pick_unit", "arguments": {"unit": ' in second  # the template wrote the call
    assert "<tool_response>\npicked " in second and "<tools>" not in second  # "none": no tools offered
    assert isinstance(result.value, str)
    assert_pool_whole(engine)
