"""Typed reads of keyword values: a malformed value is a `SchemaError` at the keyword's pointer."""

from __future__ import annotations

import math
from fractions import Fraction

from grammars.errors import SchemaError
from grammars.frontends.json_schema import numbers
from grammars.frontends.json_schema.refs import Loc
from grammars.frontends.json_schema.strings import is_spellable


def _where(loc: Loc, keyword: str) -> str:
    return loc.child(keyword).pointer


def count(schema: dict, keyword: str, loc: Loc) -> int | None:
    """A non-negative integer keyword (`minLength`, `maxItems`, ...); integral floats allowed."""
    value = schema.get(keyword)
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)  # int() of inf or nan raises
        or value != int(value)
        or value < 0
    ):
        raise SchemaError(f"{keyword} must be a non-negative integer, not {value!r}", _where(loc, keyword))
    return int(value)


def number(schema: dict, keyword: str, loc: Loc) -> Fraction | None:
    """A numeric keyword as an exact rational (`minimum`, `multipleOf`, ...)."""
    value = schema.get(keyword)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SchemaError(f"{keyword} must be a number, not {value!r}", _where(loc, keyword))
    try:
        return numbers.to_fraction(value)
    except (ValueError, OverflowError) as exc:
        raise SchemaError(f"{keyword} must be a finite number, not {value!r}", _where(loc, keyword)) from exc


def string(schema: dict, keyword: str, loc: Loc) -> str | None:
    """A string keyword (`pattern`, `format`)."""
    value = schema.get(keyword)
    if value is not None and not isinstance(value, str):
        raise SchemaError(f"{keyword} must be a string, not {value!r}", _where(loc, keyword))
    return value


def boolean(schema: dict, keyword: str, loc: Loc) -> bool | None:
    """A boolean keyword (`uniqueItems`)."""
    value = schema.get(keyword)
    if value is not None and not isinstance(value, bool):
        raise SchemaError(f"{keyword} must be a boolean, not {value!r}", _where(loc, keyword))
    return value


def string_list(schema: dict, keyword: str, loc: Loc) -> list[str] | None:
    """An array of strings (`required`, a dependentRequired entry)."""
    value = schema.get(keyword)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SchemaError(f"{keyword} must be an array of strings, not {value!r}", _where(loc, keyword))
    return value


def property_name(name: str, loc: Loc) -> str:
    """`name`, checked to be spellable as a JSON key (for `properties`: a `required` name no text
    spells only leaves no object valid).

    Raises:
        SchemaError: `name` holds a lone surrogate, which no UTF-8 JSON text spells (at `loc`).
    """
    if not is_spellable(name):
        raise SchemaError(
            f"the property name {name!r} holds a lone surrogate, which no UTF-8 JSON text spells", loc.pointer
        )
    return name


def schema_list(schema: dict, keyword: str, loc: Loc) -> list[object] | None:
    """A non-empty array of schemas (`allOf`, `anyOf`, `oneOf`, `prefixItems`)."""
    value = schema.get(keyword)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, (dict, bool)) for v in value):
        raise SchemaError(f"{keyword} must be an array of schemas", _where(loc, keyword))
    if not value and keyword != "prefixItems":
        raise SchemaError(f"{keyword} must not be empty", _where(loc, keyword))
    return value


def schema_map(schema: dict, keyword: str, loc: Loc) -> dict[str, object] | None:
    """An object of schemas (`properties`, `patternProperties`, `dependentSchemas`)."""
    value = schema.get(keyword)
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(v, (dict, bool)) for v in value.values()):
        raise SchemaError(f"{keyword} must be an object of schemas", _where(loc, keyword))
    for key in value:
        if not isinstance(key, str):
            raise SchemaError(f"{keyword} keys must be strings, not {key!r}", _where(loc, keyword))
    return value


def subschema(schema: dict, keyword: str, loc: Loc) -> object | None:
    """A single schema keyword value (`not`, `items`, `additionalProperties`, ...)."""
    value = schema.get(keyword)
    if value is not None and not isinstance(value, (dict, bool)):
        raise SchemaError(f"{keyword} must be a schema (object or boolean)", _where(loc, keyword))
    return value


JSON_TYPE_NAMES = ("null", "boolean", "integer", "number", "string", "array", "object")


def types(schema: dict, loc: Loc) -> set[str] | None:
    """The `type` keyword as a set of type names."""
    value = schema.get("type")
    if value is None:
        return None
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) and n in JSON_TYPE_NAMES for n in names):
        raise SchemaError(
            f"type must be one of {JSON_TYPE_NAMES} or an array of them, not {value!r}", _where(loc, "type")
        )
    return set(names)
