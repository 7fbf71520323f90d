"""describe_schema: the JSON shape a model reads, from the schema a type produces."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, TypeAdapter

from sdk.schema_text import describe_schema


class Address(BaseModel):
    city: str
    zip_code: str | None = None


class Person(BaseModel):
    name: str = Field(description="full  name\nas written")
    role: Literal["admin", "user"]
    tags: list[str]
    home: Address


def test_a_model_becomes_its_json_shape_with_refs_expanded() -> None:
    assert describe_schema(TypeAdapter(Person).json_schema()) == (
        "{\n"
        '  "name": string,  // full name as written\n'
        '  "role": "admin" | "user",\n'
        '  "tags": [string, ...],\n'
        '  "home": {\n'
        '    "city": string,\n'
        '    "zip_code": string | null  // optional\n'
        "  }\n"
        "}"
    )


def test_recursive_refs_are_named_not_expanded_forever() -> None:
    schema = {
        "$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}},
        "$ref": "#/$defs/Node",
    }
    assert describe_schema(schema) == '{\n  "next": Node  // optional\n}'


def test_scalars_and_free_forms() -> None:
    assert describe_schema({"type": "integer"}) == "integer"
    assert describe_schema(True) == "any"
    assert describe_schema({"type": "object", "additionalProperties": {"type": "number"}}) == "{string: number}"
    assert describe_schema({"type": ["string", "null"]}) == "string | null"
    assert describe_schema({"prefixItems": [{"type": "integer"}, {"type": "string"}], "type": "array"}) == (
        "[integer, string]"
    )
