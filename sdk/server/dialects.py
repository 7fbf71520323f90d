"""Structured-output dialects: every way clients ask for constrained output, to one grammars spec.

    field (dialect)                                          spec for grammars.compile
    response_format {"type": "text"}                 OpenAI  none
    response_format {"type": "json_object"}          OpenAI  any JSON object
    response_format {"type": "json_object",   llama.cpp, Anyscale, Instructor's JSON_SCHEMA mode
                     "schema": S}                            S
    response_format {"type": "json_schema",          OpenAI  S ("strict" or not: always enforced)
                     "json_schema": {"name", "schema": S, "strict"}}
    json_schema: S                                 llama.cpp S
    grammar: "GBNF text"                           llama.cpp grammars.GBNF(text)
    structured_outputs {"json": S | "S as JSON"}        vLLM S
                       {"regex": R}                          grammars.Regex(R)
                       {"choice": [...]}                     grammars.Choice([...])
                       {"grammar": "Lark text"}              grammars.Lark(text)
                       {"json_object": true}                 any JSON object
    guided_json, guided_regex, guided_choice,    vLLM legacy the same as structured_outputs' keys
    guided_grammar

Fail closed: a request carries at most one constraint (two are a 400 naming the second); a field of
the wrong type, an unknown `response_format.type` or `structured_outputs` key, a schema that cannot be
enforced or a bad regex or grammar is a 400 whose `param` names the field. Nothing is ever ignored
into unconstrained output.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grammars
from grammars.compiler import Constraint
from grammars.errors import StencilError
from sdk.server.errors import APIError, from_stencil_error
from sdk.server.requests import ChatCompletionRequest, CompletionRequest

__all__ = ["ConstraintSpec", "compile_constraint", "find_constraint"]

#: The schema of `json_object` requests: any JSON object.
ANY_OBJECT: dict[str, Any] = {"type": "object"}


@dataclass(frozen=True)
class ConstraintSpec:
    """A request's constraint before compiling.

    Attributes:
        param: the request field it came from, named in errors ("response_format.json_schema.schema").
        spec: what `grammars.compile` takes (a JSON Schema dict, a Regex, Lark, Choice or GBNF).
    """

    param: str
    spec: object


def find_constraint(request: ChatCompletionRequest | CompletionRequest) -> ConstraintSpec | None:
    """The one constraint of a request, from whichever dialect it uses.

    Raises:
        APIError: a 400: two constraints, or a constraint field that is malformed or unsupported.
    """
    if request.guided_whitespace_pattern is not None:
        raise APIError.bad_request(
            "guided_whitespace_pattern: not supported; JSON whitespace is bounded by the engine",
            "guided_whitespace_pattern",
        )
    found = [
        spec
        for spec in (
            _response_format(request.response_format),
            _schema(request.json_schema, "json_schema") if request.json_schema is not None else None,
            _gbnf(request.grammar, "grammar") if request.grammar is not None else None,
            _structured_outputs(request.structured_outputs),
            *(_legacy(request, name) for name in _LEGACY_FIELDS),
        )
        if spec is not None
    ]
    if len(found) > 1:
        raise APIError.bad_request(
            f"{found[1].param}: one constraint per request; {found[0].param} already gives one", found[1].param
        )
    return found[0] if found else None


async def compile_constraint(found: ConstraintSpec) -> Constraint:
    """Compile off the event loop (a new schema can take a while); cached by `grammars.compile`.

    Raises:
        APIError: a 400 naming `found.param`: the schema or grammar cannot be enforced.
    """
    try:
        return await asyncio.to_thread(grammars.compile, found.spec)
    except StencilError as exc:
        raise from_stencil_error(exc, constraint_param=found.param) from exc


def _response_format(value: object) -> ConstraintSpec | None:
    if value is None:
        return None
    mapping = _mapping(value, "response_format")
    _only_keys(mapping, ("type", "json_schema", "schema"), "response_format")
    kind = mapping.get("type")
    if kind == "text":
        for key in ("json_schema", "schema"):
            if mapping.get(key) is not None:
                raise APIError.bad_request(
                    f"response_format.{key}: not allowed with type text", f"response_format.{key}"
                )
        return None
    if kind == "json_object":
        if mapping.get("json_schema") is not None:
            raise APIError.bad_request(
                "response_format.json_schema: belongs to type json_schema", "response_format.json_schema"
            )
        schema = mapping.get("schema")
        return (
            _schema(schema, "response_format.schema")
            if schema is not None
            else ConstraintSpec("response_format", ANY_OBJECT)
        )
    if kind == "json_schema":
        if mapping.get("schema") is not None:  # llama.cpp's server also takes the schema here
            return _schema(mapping["schema"], "response_format.schema")
        inner = _mapping(mapping.get("json_schema"), "response_format.json_schema")
        _only_keys(inner, ("name", "description", "schema", "strict"), "response_format.json_schema")
        for key, expected in (("name", str), ("description", str), ("strict", bool)):
            if inner.get(key) is not None and not isinstance(inner[key], expected):
                raise _wrong_type(f"response_format.json_schema.{key}", expected.__name__, inner[key])
        if inner.get("schema") is None:
            raise APIError.bad_request(
                "response_format.json_schema.schema: missing; there is nothing to enforce",
                "response_format.json_schema.schema",
            )
        return _schema(inner["schema"], "response_format.json_schema.schema")
    raise APIError.bad_request(
        f"response_format.type: expected text, json_object or json_schema, got {kind!r}", "response_format.type"
    )


def _structured_outputs(value: object) -> ConstraintSpec | None:
    if value is None:
        return None
    mapping = _mapping(value, "structured_outputs")
    _only_keys(mapping, tuple(_VLLM_READERS), "structured_outputs")
    given = [key for key, item in mapping.items() if item is not None and item is not False]
    if len(given) != 1:
        raise APIError.bad_request(
            f"structured_outputs: expected exactly one of {', '.join(_VLLM_READERS)}, got {given or 'none'}",
            "structured_outputs",
        )
    key = given[0]
    return _VLLM_READERS[key](mapping[key], f"structured_outputs.{key}")


def _legacy(request: ChatCompletionRequest | CompletionRequest, name: str) -> ConstraintSpec | None:
    value = getattr(request, name)
    return None if value is None else _VLLM_READERS[_LEGACY_FIELDS[name]](value, name)


def _schema(value: object, param: str) -> ConstraintSpec:
    """A JSON Schema, as a dict or (vLLM) its JSON text."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise APIError.bad_request(f"{param}: not valid JSON: {exc}", param) from exc
    if not isinstance(value, dict):
        raise _wrong_type(param, "JSON Schema object", value)
    return ConstraintSpec(param, value)


def _regex(value: object, param: str) -> ConstraintSpec:
    return ConstraintSpec(param, grammars.Regex(_text(value, param)))


def _choice(value: object, param: str) -> ConstraintSpec:
    if not isinstance(value, list) or not value or not all(isinstance(option, str) for option in value):
        raise _wrong_type(param, "non-empty list of strings", value)
    return ConstraintSpec(param, grammars.Choice(value))


def _lark(value: object, param: str) -> ConstraintSpec:
    return ConstraintSpec(param, grammars.Lark(_text(value, param)))


def _gbnf(value: object, param: str) -> ConstraintSpec:
    return ConstraintSpec(param, grammars.GBNF(_text(value, param)))


def _json_object(value: object, param: str) -> ConstraintSpec:
    if value is not True:
        raise _wrong_type(param, "true", value)
    return ConstraintSpec(param, ANY_OBJECT)


#: vLLM's `structured_outputs` keys, and how each reads its value.
_VLLM_READERS: dict[str, Callable[[object, str], ConstraintSpec]] = {
    "json": _schema,
    "regex": _regex,
    "choice": _choice,
    "grammar": _lark,
    "json_object": _json_object,
}
#: vLLM's legacy fields, and the `structured_outputs` key each stands for.
_LEGACY_FIELDS = {
    "guided_json": "json",
    "guided_regex": "regex",
    "guided_choice": "choice",
    "guided_grammar": "grammar",
}


def _text(value: object, param: str) -> str:
    if not isinstance(value, str) or not value:
        raise _wrong_type(param, "non-empty string", value)
    return value


def _mapping(value: object, param: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _wrong_type(param, "object", value)
    return value


def _only_keys(mapping: Mapping[str, Any], allowed: tuple[str, ...], param: str) -> None:
    for key in mapping:
        if key not in allowed:
            raise APIError.bad_request(
                f"{param}.{key}: unknown constraint key; expected one of {', '.join(allowed)}", f"{param}.{key}"
            )


def _wrong_type(param: str, expected: str, value: object) -> APIError:
    return APIError.bad_request(f"{param}: expected a {expected}, got {type(value).__name__}", param)
