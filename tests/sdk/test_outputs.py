"""Output types: kind, constraint, parsing, rendering and description of every supported `output=`."""

from __future__ import annotations

import dataclasses
import enum
import json
from decimal import Decimal
from typing import Annotated, Any, Literal, Optional, TypedDict, Union

import pydantic
import pytest
import typing_extensions
from pydantic import BaseModel, Field, TypeAdapter

import grammars
import sdk
from grammars.compiler import Constraint
from grammars.frontends.types import type_schema
from runtime.errors import RequestError
from sdk.errors import UnsupportedOutputTypeError
from sdk.outputs import OutputKind, OutputSpec, output_spec


def constraint_of(spec: OutputSpec) -> Constraint:
    """The constraint of a spec these tests know to be constrained (not free text)."""
    assert spec.constraint is not None
    return spec.constraint


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Item(BaseModel):
    name: str = Field(description="what it is called")
    price: int = Field(ge=0)
    color: Color | None = None


@pytest.mark.parametrize(
    ("output", "kind", "text", "value"),
    [
        (None, OutputKind.TEXT, "anything at all", "anything at all"),
        (str, OutputKind.TEXT, "free", "free"),
        (grammars.Regex(r"[0-9]+"), OutputKind.GRAMMAR, "42", "42"),
        (grammars.Choice(["yes", "no"]), OutputKind.GRAMMAR, "no", "no"),
        ({"type": "array", "items": {"type": "integer"}}, OutputKind.JSON_SCHEMA, "[1, 2]", [1, 2]),
        (int, OutputKind.TYPE, "7", 7),
        (Literal["a", "b"], OutputKind.TYPE, "b", "b"),
        (Color, OutputKind.TYPE, "green", Color.GREEN),
        (list[int], OutputKind.TYPE, "[3, 4]", [3, 4]),
        (Item, OutputKind.TYPE, '{"name": "pen", "price": 2}', Item(name="pen", price=2)),
    ],
)
def test_each_output_kind_constrains_and_parses(output: object, kind: OutputKind, text: str, value: object) -> None:
    spec = output_spec(output)
    assert spec.kind is kind
    assert (spec.constraint is None) == (kind is OutputKind.TEXT)
    if spec.constraint is not None:
        assert spec.constraint.accepts(text)
    assert spec.parse(text) == value


def test_specs_are_cached_per_output() -> None:
    assert output_spec(Item) is output_spec(Item)
    assert output_spec({"type": "integer"}) is output_spec({"type": "integer"})


def test_orders_that_the_output_keeps_are_part_of_its_identity() -> None:
    assert output_spec(Literal["b", "a"]).labels == ("b", "a") and output_spec(Literal["a", "b"]).labels == ("a", "b")
    first = {
        "type": "object",
        "properties": {"b": {"type": "integer"}, "a": {"type": "integer"}},
        "required": ["a", "b"],
    }
    second = {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    }
    assert constraint_of(output_spec(first)).accepts('{"b": 1, "a": 2}')
    assert constraint_of(output_spec(second)).accepts('{"a": 2, "b": 1}')


class Open(BaseModel, extra="allow"):
    name: str


class Movie(typing_extensions.TypedDict):
    title: str


class Draft(typing_extensions.TypedDict, total=False):
    title: str


class Scored(typing_extensions.TypedDict, extra_items=int):  # type: ignore[call-arg]
    title: str


@dataclasses.dataclass
class Point:
    x: int


class Order(BaseModel):
    item: Item
    extras: Open | None = None


#: Texts to tell the languages apart: each type's valid texts and the same with an undeclared key.
PROBES = (
    "null",
    "[]",
    "{}",
    '{"x": 1}',
    '{"x": 1, "y": 2}',
    '{"name": "pen"}',
    '{"name": "pen", "brand": "x"}',
    '{"name": "pen", "price": 2}',
    '{"name": "pen", "price": 2, "brand": "x"}',
    '[{"name": "pen", "price": 2}]',
    '[{"name": "pen", "price": 2, "brand": "x"}]',
    '{"k": {"name": "pen", "price": 2}}',
    '{"k": {"name": "pen", "price": 2, "brand": "x"}}',
    '{"title": "t"}',
    '{"title": "t", "x": 1}',
    '{"title": "t", "x": "1"}',
    '{"item": {"name": "pen", "price": 2}}',
    '{"item": {"name": "pen", "price": 2}, "x": 1}',
    '{"item": {"name": "pen", "price": 2, "brand": "x"}}',
    '{"item": {"name": "pen", "price": 2}, "extras": {"name": "e", "brand": "x"}}',
)


@pytest.mark.parametrize(
    "output",
    [
        Item,
        Open,
        Movie,
        Draft,
        Scored,
        Point,
        Order,
        Optional[Item],
        Union[Item, Point],
        Item | Open,
        list[Item],
        dict[str, Item],
        dict[str, Any],
    ],
    ids=repr,
)
def test_the_sdk_enforces_exactly_what_grammars_compiles(output: Any) -> None:
    """`grammars` alone decides which texts a type admits: `output=T` is `grammars.compile(T)` (the
    same cached object, and a fresh compilation of T accepts the same probes)."""
    spec = output_spec(output)
    assert spec.json_schema == type_schema(output)
    assert spec.constraint is grammars.compile(output)
    fresh = grammars.compile(output, cache=False)
    accepted = [text for text in PROBES if fresh.accepts(text)]
    assert accepted == [text for text in PROBES if constraint_of(spec).accepts(text)]
    assert accepted, "no probe is valid: the table does not exercise the type"
    adapter: TypeAdapter[Any] = TypeAdapter(output)
    for text in accepted:
        adapter.validate_json(text)


@pytest.mark.parametrize(
    ("output", "extra_key", "is_open"),
    [
        (Item, '{"name": "pen", "price": 2, "brand": "x"}', False),
        (Open, '{"name": "pen", "brand": "x"}', True),
        (Movie, '{"title": "t", "x": 1}', False),
        (Draft, '{"title": "t", "x": 1}', False),
        (Scored, '{"title": "t", "x": 1}', True),
        (Point, '{"x": 1, "y": 2}', False),
        (Order, '{"item": {"name": "pen", "price": 2, "brand": "x"}}', False),
        (Order, '{"item": {"name": "pen", "price": 2}, "extras": {"name": "e", "brand": "x"}}', True),
        (list[Item], '[{"name": "pen", "price": 2, "brand": "x"}]', False),
    ],
)
def test_a_type_constraint_forbids_keys_the_type_does_not_keep(output: object, extra_key: str, is_open: bool) -> None:
    assert constraint_of(output_spec(output)).accepts(extra_key) == is_open


def test_a_validator_the_grammar_cannot_express_fails_in_parse() -> None:
    class Even(BaseModel):
        n: int

        @pydantic.field_validator("n")
        @classmethod
        def even(cls, value: int) -> int:
            if value % 2:
                raise ValueError("must be even")
            return value

    spec = output_spec(Even)
    assert spec.is_validated and constraint_of(spec).accepts('{"n": 3}')
    with pytest.raises(pydantic.ValidationError):
        spec.parse('{"n": 3}')


class T(TypedDict):
    """A `typing.TypedDict`, which Pydantic refuses before Python 3.12 (it wants typing_extensions')."""

    a: int


@pytest.mark.parametrize("output", [print, 5, "json", object(), T])
def test_what_is_not_a_type_is_an_unsupported_output(output: object) -> None:
    with pytest.raises(UnsupportedOutputTypeError) as info:
        output_spec(output)
    assert info.value.output is output


def test_engine_errors_reach_the_caller_unchanged() -> None:
    with pytest.raises(grammars.UnsupportedSchemaError) as info:
        output_spec({"type": "array", "uniqueItems": True, "items": {"type": "object"}})
    assert info.value.keyword == "uniqueItems"
    with pytest.raises(grammars.GrammarSyntaxError):
        output_spec(grammars.Regex("(unclosed"))
    with pytest.raises(grammars.UnsupportedSchemaError):
        output_spec(Annotated[Decimal, Field(max_digits=5)])


def test_string_choices_are_written_as_bare_labels() -> None:
    spec = output_spec(Literal["positive", "negative"])
    assert spec.labels == ("positive", "negative")
    assert constraint_of(spec).accepts("negative") and not constraint_of(spec).accepts('"negative"')
    assert spec.render("positive", "f") == "positive"
    assert spec.describe() == "Respond with exactly one of: positive, negative."
    assert output_spec(Literal["a", 1]).labels is None and output_spec(Literal["a"] | None).labels is None


def test_render_writes_values_the_way_the_model_should() -> None:
    assert json.loads(output_spec(Item).render({"name": "pen", "price": 2}, "f")) == {
        "name": "pen",
        "price": 2,
        "color": None,
    }
    assert output_spec(grammars.Choice(["yes", "no"])).render("no", "f") == "no"
    with pytest.raises(RequestError) as info:
        output_spec(grammars.Choice(["yes", "no"])).render("maybe", "examples[0].output")
    assert info.value.field == "examples[0].output"
    with pytest.raises(RequestError):
        output_spec(Item).render({"name": "pen", "price": -1}, "f")
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    with pytest.raises(RequestError, match="'a' is a required property"):
        output_spec(schema).render({"b": "x"}, "f")


def test_describe_tells_the_model_the_form() -> None:
    item = output_spec(Item).describe()
    assert item is not None
    assert '"name": string,  // what it is called' in item and '"price": integer' in item
    assert "red" in item
    assert output_spec(grammars.Choice(["yes", "no"])).describe() == "Respond with exactly one of: yes, no."
    assert output_spec(None).describe() is None


def test_vote_keys_are_checked_against_the_fields() -> None:
    output_spec(Item).check_vote_key("price")
    output_spec(Item).check_vote_key(lambda item: item.price)
    with pytest.raises(RequestError, match="no field 'cost'") as info:
        output_spec(Item).check_vote_key("cost")
    assert info.value.field == "vote_on"
    with pytest.raises(RequestError):
        output_spec(int).check_vote_key("value")


REMOTE = "https://example.com/size.json"
#: A finite language, so that the toy model's output ends within a few tokens.
SIZED = {
    "type": "object",
    "properties": {"size": {"$ref": REMOTE}},
    "required": ["size"],
    "additionalProperties": False,
}
SIZES = {REMOTE: {"enum": [1, 2]}}


def test_a_schema_output_resolves_remote_refs_through_its_resources() -> None:
    with pytest.raises(grammars.SchemaError, match="resources="):
        output_spec(SIZED)
    spec = output_spec(sdk.Schema(SIZED, resources=SIZES))
    assert spec.kind is OutputKind.JSON_SCHEMA and spec.json_schema == SIZED
    assert constraint_of(spec).accepts('{"size": 2}') and not constraint_of(spec).accepts('{"size": 3}')
    assert spec.parse('{"size": 2}') == {"size": 2}
    assert spec.render({"size": 1}, "f") == '{"size": 1}'
    with pytest.raises(RequestError, match="not valid against the output schema"):
        spec.render({"size": 3}, "f")  # the remote document decides, read from resources
    assert "size" in (spec.describe() or "")


def test_a_lenient_schema_output_compiles_a_misspelled_keyword_with_a_warning() -> None:
    misspelled = {"type": "object", "properties": {"name": {"type": "string", "maxLenght": 3}}}
    with pytest.raises(grammars.UnsupportedSchemaError, match="maxLenght"):
        output_spec(sdk.Schema(misspelled))
    with pytest.warns(grammars.UnsupportedSchemaWarning, match="maxLenght"):
        spec = output_spec(sdk.Schema(misspelled, lenient=True, whitespace="compact"))
    assert constraint_of(spec).accepts('{"name":"Ada Lovelace"}') and not constraint_of(spec).accepts('{"name": "Ada"}')


def test_schema_outputs_are_cached_by_schema_and_options() -> None:
    assert output_spec(sdk.Schema(SIZED, resources=SIZES)) is output_spec(sdk.Schema(SIZED, resources=SIZES))
    compact = output_spec(sdk.Schema(SIZED, resources=SIZES, whitespace="compact"))
    assert constraint_of(compact).accepts('{"size":1}') and not constraint_of(compact).accepts('{"size": 1}')


async def test_schema_and_lark_options_reach_the_engine(llm: sdk.LLM, tmp_path) -> None:
    (tmp_path / "answers.lark").write_text('ANSWER: "yes" | "no"\n')
    value = await llm.generate("size?", output=sdk.Schema(SIZED, resources=SIZES), max_tokens=40)
    assert value in ({"size": 1}, {"size": 2})
    lark = sdk.Lark("start: ANSWER\n%import .answers.ANSWER\n", import_paths=[tmp_path])
    assert await llm.generate("yes or no?", output=lark, max_tokens=8) in ("yes", "no")


async def test_a_gbnf_output_is_described_enforced_and_returned_as_text(llm: sdk.LLM) -> None:
    gbnf = sdk.GBNF('root ::= answer\nanswer ::= "yes" | "no"\n')
    spec = output_spec(gbnf)
    assert spec.kind is OutputKind.GRAMMAR and 'answer ::= "yes" | "no"' in (spec.describe() or "")
    assert constraint_of(spec).accepts("no") and not constraint_of(spec).accepts("maybe")
    assert await llm.generate("yes or no?", output=gbnf, max_tokens=8) in ("yes", "no")
