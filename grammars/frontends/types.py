"""Python types and Pydantic models to JSON Schema, tightened so every admitted text validates.

Pydantic writes the schema (`model_json_schema` / `TypeAdapter.json_schema`, validation mode: nested
and recursive models as `$defs`, `Field` constraints, `extra="forbid"` as `additionalProperties:
false`, discriminated unions as `oneOf`). A few of its schemas describe a type more loosely or more
tightly than Pydantic's own JSON validation, and are rewritten here:

    Decimal             `anyOf: [number, string]` (any string!)  ->  number, `decimal_places` as multipleOf
    bytes               `format: binary` (no such format)        ->  string (length limits count bytes: refused)
    set, frozenset      `uniqueItems: true`, which Pydantic's validation does not require (it drops
                        duplicates)                              ->  no uniqueItems
    dict[int, V]        any string key, though Pydantic rejects "a"  ->  keys that are canonical integers

Objects are then closed (`_closed_objects`): Pydantic ignores undeclared keys by default, so the
exact schema of a model, dataclass or TypedDict admits any extra key, and a model given that
freedom invents fields until `max_tokens` runs out. Every object with declared properties forbids
undeclared keys unless Pydantic says which it takes (`additionalProperties`: `extra="forbid"`,
`extra="allow"`, PEP 728 `closed` / `extra_items`); `total=False` only makes keys optional. This is
the one place that decides it: `grammars.compile(T)` and the SDK's `output=T` enforce the same
language.

Types Pydantic cannot describe raise `UnsupportedSchemaError` naming the type.
"""

from __future__ import annotations

from typing import Any

from grammars.errors import UnsupportedSchemaError
from grammars.frontends.json_schema.refs import SCHEMA_KEYWORDS, SCHEMA_LIST_KEYWORDS, SCHEMA_MAP_KEYWORDS

_INTEGER_KEY = "^-?(0|[1-9][0-9]*)$"


def type_schema(tp: Any) -> dict:
    """The JSON Schema of the JSON texts that validate as `tp`.

    Args:
        tp: a Pydantic model class, dataclass, TypedDict, or a typing form over int, float, bool,
            str, None, bytes, Decimal, date/datetime/time/timedelta, UUID, Enum, Literal,
            Optional/Union, list/tuple/set/frozenset and dict[str | int | Literal | Enum, V].
    Returns:
        A JSON Schema (draft 2020-12) dict, objects closed (see the module docstring).
    Raises:
        UnsupportedSchemaError: `tp` (or a type inside it) has no exact JSON Schema.
    """
    from pydantic import BaseModel, TypeAdapter
    from pydantic.errors import PydanticInvalidForJsonSchema, PydanticSchemaGenerationError, PydanticUserError

    try:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            schema = tp.model_json_schema(schema_generator=_schema_generator())
        else:
            schema = TypeAdapter(tp).json_schema(schema_generator=_schema_generator())
    except (PydanticSchemaGenerationError, PydanticInvalidForJsonSchema, PydanticUserError) as exc:
        raise UnsupportedSchemaError("type", "", f"Python type {tp!r} has no JSON Schema: {exc}") from exc
    except _Refused as exc:
        raise UnsupportedSchemaError("type", "", f"in Python type {tp!r}: {exc}") from exc
    return _closed_objects(schema)


def _closed_objects(schema: Any) -> Any:
    """A copy of `schema` where every object with declared properties and no `additionalProperties`
    forbids undeclared keys. Every text the closed schema admits still validates (Pydantic ignores
    the keys it would have had), and structured-output peers (OpenAI and XGrammar strict modes)
    close objects the same way.

    Only subschemas are walked, along the JSON Schema front end's own tables of the keywords that
    hold them: data (`default`, `const`, `enum`, `examples`) is never rewritten, and a property
    named `properties` is a name, not a keyword."""
    if not isinstance(schema, dict):
        return schema
    closed = dict(schema)
    for keyword, value in schema.items():
        if keyword in SCHEMA_MAP_KEYWORDS and isinstance(value, dict):
            closed[keyword] = {name: _closed_objects(member) for name, member in value.items()}
        elif keyword in SCHEMA_LIST_KEYWORDS and isinstance(value, list):
            closed[keyword] = [_closed_objects(member) for member in value]
        elif keyword in SCHEMA_KEYWORDS:
            closed[keyword] = _closed_objects(value)
    if "properties" in closed and "additionalProperties" not in closed:
        closed["additionalProperties"] = False
    return closed


class _Refused(Exception):
    """A type whose JSON texts Stencil cannot describe exactly."""


_GENERATOR: type | None = None


def _schema_generator() -> type:
    """The GenerateJsonSchema subclass with the rewrites of the module docstring (built on first use,
    so importing `grammars` does not import Pydantic)."""
    global _GENERATOR
    if _GENERATOR is not None:
        return _GENERATOR
    from pydantic.json_schema import GenerateJsonSchema

    class StencilJsonSchema(GenerateJsonSchema):
        def decimal_schema(self, schema: Any) -> dict:
            if schema.get("max_digits") is not None:
                raise _Refused("Decimal with max_digits has no exact JSON Schema")
            result: dict = {"type": "number"}
            for source, target in (
                ("ge", "minimum"),
                ("le", "maximum"),
                ("gt", "exclusiveMinimum"),
                ("lt", "exclusiveMaximum"),
                ("multiple_of", "multipleOf"),
            ):
                if schema.get(source) is not None:
                    result[target] = _plain_number(schema[source])
            if schema.get("decimal_places") is not None:
                step = 10 ** -schema["decimal_places"]
                result["multipleOf"] = step if "multipleOf" not in result else result["multipleOf"]
                if result["multipleOf"] != step:
                    raise _Refused("Decimal with both multiple_of and decimal_places has no exact JSON Schema")
            return result

        def bytes_schema(self, schema: Any) -> dict:
            if schema.get("min_length") is not None or schema.get("max_length") is not None:
                raise _Refused("bytes length limits count bytes, not characters")
            return {"type": "string"}

        def complex_schema(self, schema: Any) -> dict:
            raise _Refused("complex numbers are strings of a syntax JSON Schema cannot describe")

        def set_schema(self, schema: Any) -> dict:
            result = super().set_schema(schema)
            result.pop("uniqueItems", None)
            return result

        def frozenset_schema(self, schema: Any) -> dict:
            result = super().frozenset_schema(schema)
            result.pop("uniqueItems", None)
            return result

        def dict_schema(self, schema: Any) -> dict:
            result = super().dict_schema(schema)
            keys = schema.get("keys_schema", {"type": "any"})
            kind = keys.get("type")
            if kind == "int" and not any(k in keys for k in ("ge", "gt", "le", "lt", "multiple_of")):
                result["propertyNames"] = {"pattern": _INTEGER_KEY}
            elif kind not in ("str", "any", "literal", "enum") and "propertyNames" not in result:
                raise _Refused(f"dict keys of core schema type {kind!r} have no exact JSON Schema")
            return result

    _GENERATOR = StencilJsonSchema
    return _GENERATOR


def _plain_number(value: object) -> int | float:
    """A Decimal bound as a JSON number (int when integral, else float through its decimal text)."""
    number = float(value)  # type: ignore[arg-type]
    return int(number) if number.is_integer() else number
