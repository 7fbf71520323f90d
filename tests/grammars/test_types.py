"""Python types and Pydantic models to JSON Schema, checked through the compiled grammar and Pydantic."""

import datetime
import decimal
import enum
import json
import uuid
from dataclasses import dataclass
from typing import Annotated, Literal, Optional, Union

import pydantic
import pytest
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, WithJsonSchema, with_config
from typing_extensions import NotRequired, TypedDict

from grammars.compiler import compile_grammar
from grammars.errors import UnsupportedSchemaError
from grammars.frontends.json_schema import schema_grammar
from grammars.frontends.types import type_schema


def constraint(tp):
    return compile_grammar(schema_grammar(type_schema(tp)))


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Address(BaseModel):
    model_config = ConfigDict(extra="forbid")
    street: str = Field(min_length=1, max_length=40)
    zip: str = Field(pattern=r"^[0-9]{5}$")


class Person(BaseModel):
    name: str
    age: int = Field(ge=0, lt=150)
    height: float = Field(gt=0, multiple_of=0.5)
    color: Color = Color.RED
    address: Address | None = None
    tags: list[str] = []
    kind: Literal["human", "robot"] = "human"
    born: datetime.date | None = None
    id: uuid.UUID | None = None


class Tree(BaseModel):
    value: int
    children: list["Tree"] = []


def test_pydantic_model_accepts_what_it_validates():
    person = Person(
        name="Ada",
        age=36,
        height=170.5,
        address=Address(street="Main St", zip="12345"),
        tags=["x"],
        born=datetime.date(1815, 12, 10),
        id=uuid.UUID(int=7),
    )
    text = person.model_dump_json()
    assert constraint(Person).accepts(json.dumps(json.loads(text)))
    for bad in (
        '{"name": "Ada", "age": 150, "height": 1}',
        '{"name": "Ada", "age": 1, "height": 1.25}',
        '{"name": "Ada", "age": 1, "height": 1, "address": {"street": "s", "zip": "1234"}}',
        '{"name": "Ada", "age": 1, "height": 1, "address": {"street": "s", "zip": "12345", "x": 1}}',
        '{"name": "Ada", "age": 1, "height": 1, "color": "blue"}',
        '{"name": "Ada", "age": 1, "height": 1, "born": "2023-02-29"}',
    ):
        assert not constraint(Person).accepts(bad), bad
        with pytest.raises(pydantic.ValidationError):
            Person.model_validate_json(bad)


def test_recursive_models_become_recursive_rules():
    tree = Tree(value=1, children=[Tree(value=2, children=[Tree(value=3)])])
    assert constraint(Tree).accepts(json.dumps(tree.model_dump()))
    assert not constraint(Tree).accepts('{"value": 1, "children": [{"children": []}]}')


@pytest.mark.parametrize(
    "tp, good, bad",
    [
        (int, ["0", "-12"], ["1.5", '"1"']),
        (float, ["1.5", "2", "-1e-05"], ['"x"']),
        (bool, ["true"], ["1"]),
        (str, ['"x"'], ["1"]),
        (type(None), ["null"], ["0"]),
        (Literal["a", 2], ['"a"', "2"], ['"b"']),
        (Color, ['"red"'], ['"RED"']),
        (Optional[int], ["null", "3"], ['"3"']),
        (Union[int, str], ["1", '"a"'], ["[]"]),
        (list[int], ["[]", "[1, 2]"], ['["a"]']),
        (tuple[int, str], ['[1, "a"]'], ["[1]", '[1, "a", 2]']),
        (tuple[int, ...], ["[]", "[1, 2, 3]"], ['["a"]']),
        (set[str], ['["a", "a"]'], ["[1]"]),
        (frozenset[Color], ['["red"]'], ['["blue"]']),
        (dict[str, int], ['{"a": 1}'], ['{"a": "1"}']),
        (dict[int, str], ['{"1": "a", "-2": "b"}'], ['{"a": "x"}', '{"01": "x"}']),
        (datetime.datetime, ['"2024-01-31T10:00:00Z"'], ['"2024-01-32T10:00:00Z"']),
        (datetime.time, ['"10:00:00+01:00"'], ['"25:00:00Z"']),
        (uuid.UUID, ['"12345678-1234-1234-1234-123456789abc"'], ['"1234"']),
        (Annotated[decimal.Decimal, Field(decimal_places=2, ge=0)], ["1.25", "3"], ["1.255", "-1", '"1.25"']),
        (Annotated[int, Field(multiple_of=5, le=20)], ["15", "-5"], ["16", "25"]),
    ],
)
def test_python_types(tp, good, bad):
    compiled = constraint(tp)
    adapter = TypeAdapter(tp)
    for text in good:
        assert compiled.accepts(text), text
        adapter.validate_json(text)
    for text in bad:
        assert not compiled.accepts(text), text


def test_dataclasses_and_typed_dicts():
    @dataclass
    class Point:
        x: int
        y: int = 0

    class Movie(TypedDict):
        title: str
        year: int

    assert constraint(Point).accepts('{"x": 1, "y": 2}') and not constraint(Point).accepts('{"y": 2}')
    assert constraint(Movie).accepts('{"title": "t", "year": 1999}') and not constraint(Movie).accepts('{"title": "t"}')


@pytest.mark.parametrize(
    "tp", [complex, dict[float, int], Annotated[decimal.Decimal, Field(max_digits=3)], object.__new__]
)
def test_unsupported_types_name_themselves(tp):
    with pytest.raises(UnsupportedSchemaError, match="Python type"):
        type_schema(tp)


class Loose(BaseModel):
    name: str


class Open(BaseModel, extra="allow"):
    name: str


class Typed(BaseModel, extra="allow"):
    __pydantic_extra__: dict[str, int]
    name: str


class Movie(TypedDict):
    title: str


class Draft(TypedDict, total=False):
    title: str


@with_config(ConfigDict(extra="allow"))
class OpenMovie(TypedDict):
    title: str


class Scored(TypedDict, extra_items=int):  # PEP 728
    title: str


@dataclass
class Point:
    x: int


class Shelf(BaseModel):
    first: Loose
    more: list[Movie]
    open: Open | None = None


@pytest.mark.parametrize(
    ("tp", "valid", "extra_key", "is_open"),
    [
        (Loose, '{"name": "a"}', '{"name": "a", "x": 1}', False),
        (Address, '{"street": "s", "zip": "12345"}', '{"street": "s", "zip": "12345", "x": 1}', False),
        (Open, '{"name": "a"}', '{"name": "a", "x": 1}', True),
        (Typed, '{"name": "a"}', '{"name": "a", "x": 1}', True),
        (Movie, '{"title": "t"}', '{"title": "t", "x": 1}', False),
        (Draft, "{}", '{"x": 1}', False),
        (OpenMovie, '{"title": "t"}', '{"title": "t", "x": 1}', True),
        (Scored, '{"title": "t"}', '{"title": "t", "x": 1}', True),
        (Point, '{"x": 1}', '{"x": 1, "y": 2}', False),
        (Optional[Loose], "null", '{"name": "a", "x": 1}', False),
        (Union[Loose, Point], '{"x": 1}', '{"x": 1, "name": "a", "y": 2}', False),
        (list[Loose], '[{"name": "a"}]', '[{"name": "a", "x": 1}]', False),
        (dict[str, Movie], '{"k": {"title": "t"}}', '{"k": {"title": "t", "x": 1}}', False),
        (Shelf, '{"first": {"name": "a"}, "more": []}', '{"first": {"name": "a", "x": 1}, "more": []}', False),
        (
            Shelf,
            '{"first": {"name": "a"}, "more": []}',
            '{"first": {"name": "a"}, "more": [{"title": "t", "x": 1}]}',
            False,
        ),
        (Shelf, '{"first": {"name": "a"}, "more": []}', '{"first": {"name": "a"}, "more": [], "x": 1}', False),
        (
            Shelf,
            '{"first": {"name": "a"}, "more": []}',
            '{"first": {"name": "a"}, "more": [], "open": {"name": "b", "x": 1}}',
            True,
        ),
    ],
)
def test_objects_take_undeclared_keys_only_where_the_type_says_so(tp, valid, extra_key, is_open):
    """Pydantic ignores undeclared keys unless told otherwise: the schema closes those objects (every
    text it admits still validates) and keeps the ones Pydantic stores (`extra="allow"`, PEP 728)."""
    compiled = constraint(tp)
    adapter = TypeAdapter(tp)
    assert compiled.accepts(valid)
    adapter.validate_json(valid)
    assert compiled.accepts(extra_key) == is_open
    if is_open:
        adapter.validate_json(extra_key)


def test_typed_extra_keys_keep_their_type():
    assert not constraint(Typed).accepts('{"name": "a", "x": "1"}')
    assert not constraint(Scored).accepts('{"title": "t", "x": "1"}')


def test_a_typed_dict_that_is_not_total_is_closed_with_optional_keys():
    class Partial(TypedDict):
        title: str
        year: NotRequired[int]

    assert constraint(Partial).accepts('{"title": "t"}') and constraint(Partial).accepts('{"title": "t", "year": 1}')
    assert not constraint(Partial).accepts('{"title": "t", "month": 1}')


def test_closing_walks_subschemas_only():
    """A property named like a keyword is a name, and data (`default`, `const`, `enum`, `examples`)
    is never rewritten; subschemas under every keyword the JSON Schema front end knows are closed."""
    data = {"properties": {"a": {}}}
    hand_written = {
        "type": "object",
        "dependencies": {"a": {"properties": {"b": {"type": "integer"}}}, "c": ["d"]},
        "contentSchema": {"properties": {"x": {}}},
        "const": data,
        "enum": [data],
        "examples": [data],
    }

    class Props(BaseModel):
        properties: str
        additionalProperties: int = 0
        shape: dict = Field(default=data)
        custom: Annotated[dict, WithJsonSchema(hand_written)] = {}

    schema = type_schema(Props)
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == {"properties", "additionalProperties", "shape", "custom"}
    assert schema["properties"]["properties"] == {"title": "Properties", "type": "string"}
    assert schema["properties"]["shape"]["default"] == data
    closed = schema["properties"]["custom"]
    assert closed["const"] == closed["enum"][0] == closed["examples"][0] == data
    assert closed["dependencies"]["a"]["additionalProperties"] is False and closed["dependencies"]["c"] == ["d"]
    assert closed["contentSchema"]["additionalProperties"] is False
    assert "additionalProperties" not in closed  # declares no properties
    assert constraint(Props).accepts('{"properties": "p", "additionalProperties": 1}')
    assert not constraint(Props).accepts('{"properties": "p", "other": 1}')
