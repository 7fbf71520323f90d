"""Every structured-output dialect to one grammars spec, and fail-closed refusals (no model, no server)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import grammars
from sdk.server.dialects import ANY_OBJECT, ConstraintSpec, compile_constraint, find_constraint
from sdk.server.errors import APIError
from sdk.server.requests import ChatCompletionRequest, parse_body

SCHEMA = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
GBNF_TEXT = 'root ::= "yes" | "no"'


def chat(**fields: Any) -> ChatCompletionRequest:
    return parse_body(ChatCompletionRequest, {"model": "m", "messages": [], **fields})


def refusal(**fields: Any) -> APIError:
    with pytest.raises(APIError) as caught:
        found = find_constraint(chat(**fields))
        if found is not None:
            asyncio.run(compile_constraint(found))
    assert caught.value.status == 400
    return caught.value


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"response_format": {"type": "json_object"}}, ConstraintSpec("response_format", ANY_OBJECT)),
        (
            {"response_format": {"type": "json_object", "schema": SCHEMA}},
            ConstraintSpec("response_format.schema", SCHEMA),
        ),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "a", "schema": SCHEMA, "strict": True},
                }
            },
            ConstraintSpec("response_format.json_schema.schema", SCHEMA),
        ),
        ({"json_schema": SCHEMA}, ConstraintSpec("json_schema", SCHEMA)),
        ({"grammar": GBNF_TEXT}, ConstraintSpec("grammar", grammars.GBNF(GBNF_TEXT))),
        ({"structured_outputs": {"json": SCHEMA}}, ConstraintSpec("structured_outputs.json", SCHEMA)),
        (
            {"structured_outputs": {"regex": "[0-9]+"}},
            ConstraintSpec("structured_outputs.regex", grammars.Regex("[0-9]+")),
        ),
        (
            {"structured_outputs": {"choice": ["a", "b"]}},
            ConstraintSpec("structured_outputs.choice", grammars.Choice(["a", "b"])),
        ),
        (
            {"structured_outputs": {"grammar": 'start: "x"'}},
            ConstraintSpec("structured_outputs.grammar", grammars.Lark('start: "x"')),
        ),
        ({"structured_outputs": {"json_object": True}}, ConstraintSpec("structured_outputs.json_object", ANY_OBJECT)),
        ({"guided_json": SCHEMA}, ConstraintSpec("guided_json", SCHEMA)),
        ({"guided_json": '{"type": "integer"}'}, ConstraintSpec("guided_json", {"type": "integer"})),
        ({"guided_regex": "a+"}, ConstraintSpec("guided_regex", grammars.Regex("a+"))),
        ({"guided_choice": ["x", "y"]}, ConstraintSpec("guided_choice", grammars.Choice(["x", "y"]))),
        ({"guided_grammar": 'start: "x"'}, ConstraintSpec("guided_grammar", grammars.Lark('start: "x"'))),
    ],
)
def test_each_dialect_gives_its_spec(fields: dict[str, Any], expected: ConstraintSpec) -> None:
    assert find_constraint(chat(**fields)) == expected


@pytest.mark.parametrize("fields", [{}, {"response_format": {"type": "text"}}, {"response_format": None}])
def test_no_constraint(fields: dict[str, Any]) -> None:
    assert find_constraint(chat(**fields)) is None


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"response_format": {"type": "json_object"}, "guided_regex": "a"}, "guided_regex"),
        ({"json_schema": SCHEMA, "grammar": GBNF_TEXT}, "grammar"),
        ({"guided_json": SCHEMA, "guided_choice": ["a"]}, "guided_choice"),
        ({"response_format": {"type": "xml"}}, "response_format.type"),
        ({"response_format": "json_object"}, "response_format"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "a"}}},
            "response_format.json_schema.schema",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"schema": SCHEMA, "strict": "yes"}}},
            "response_format.json_schema.strict",
        ),
        ({"response_format": {"type": "json_object", "extra": 1}}, "response_format.extra"),
        ({"response_format": {"type": "text", "schema": SCHEMA}}, "response_format.schema"),
        ({"structured_outputs": {"regex": "a", "choice": ["a"]}}, "structured_outputs"),
        ({"structured_outputs": {"structural_tag": "x"}}, "structured_outputs.structural_tag"),
        ({"structured_outputs": {"json_object": "yes"}}, "structured_outputs.json_object"),
        ({"guided_regex": 5}, "guided_regex"),
        ({"guided_choice": "a"}, "guided_choice"),
        ({"guided_choice": []}, "guided_choice"),
        ({"guided_json": "{not json"}, "guided_json"),
        ({"guided_json": [1]}, "guided_json"),
        ({"grammar": ""}, "grammar"),
        ({"guided_whitespace_pattern": " *", "guided_json": SCHEMA}, "guided_whitespace_pattern"),
        # Found, then refused when compiled: each names its field.
        ({"guided_regex": "(ab"}, "guided_regex"),
        ({"json_schema": {"type": "string", "format": "hostnamex"}}, "json_schema"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {"$dynamicRef": "#x"}}}},
            "response_format.json_schema.schema",
        ),
        ({"structured_outputs": {"grammar": "start: undefined_rule"}}, "structured_outputs.grammar"),
        ({"grammar": "root ::= missing"}, "grammar"),
    ],
)
def test_fails_closed_naming_the_field(fields: dict[str, Any], param: str) -> None:
    assert refusal(**fields).param == param


def test_compiled_constraint_enforces_the_schema() -> None:
    found = find_constraint(chat(guided_json=SCHEMA))
    assert found is not None
    constraint = asyncio.run(compile_constraint(found))
    assert constraint.accepts('{"age": 3}')
    assert not constraint.accepts('{"age": "3"}')
