"""Output types: what `output=` can be, and for each, its constraint and its parser.

    output=None or str                       free text                       -> str
    output=grammars.Regex/Lark/GBNF/Choice   text in that language           -> str
    output={...} (a JSON Schema dict)        JSON the schema accepts         -> the parsed JSON value
    output=grammars.Schema(schema, ...)      the same, compiled with its own -> the parsed JSON value
                                             lenient / resources / whitespace / indent
    output=T (Pydantic model, int, Literal,  JSON of T, validated by         -> a T
      Enum, list[...], dataclass, ...)       Pydantic's TypeAdapter(T)

Everything is resolved once per output type and cached: the schema (`grammars.frontends.types.type_schema`,
the JSON texts that validate as the type, objects closed), the constraint (`grammars.compile(T)`: `grammars`
alone decides which texts are valid, so the SDK enforces exactly what `grammars.compile` does), and the
TypeAdapter that parses. One exception: a type that is one of a few strings is written as a bare label
(`positive`, not `"positive"`), a `grammars.Choice` of the same values. The prompt describes the same
schema the constraint enforces (`sdk.schema_text.describe_output`); `vote_on=` is checked against it
(`sdk.voting.check_vote_key`). Resolving raises before any generation starts:
`UnsupportedOutputTypeError` for something that is not a type, `grammars.UnsupportedSchemaError` for
a type without an exact schema, and the other `GrammarError`s from the engine.
"""

from __future__ import annotations

import enum
import json
import threading
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema
import pydantic
import referencing
import referencing.jsonschema
from pydantic import TypeAdapter

import grammars
from grammars.compiler import Constraint
from grammars.errors import SchemaError
from grammars.frontends.types import type_schema
from runtime.errors import RequestError
from sdk.errors import UnsupportedOutputTypeError
from sdk.schema_text import describe_output
from sdk.voting import check_vote_key

__all__ = ["OutputKind", "OutputSpec", "output_spec"]

#: The parser of JSON Schema outputs: any JSON value (the grammar already enforced the schema).
_ANY_JSON: TypeAdapter[Any] = TypeAdapter(Any)


class OutputKind(enum.Enum):
    """How an output is constrained and parsed."""

    TEXT = "text"
    GRAMMAR = "grammar"
    JSON_SCHEMA = "json_schema"
    TYPE = "type"


@dataclass(frozen=True, eq=False)
class OutputSpec:
    """One resolved output type.

    Attributes:
        output: what the caller passed as `output=`.
        kind: how it is constrained and parsed.
        constraint: the compiled constraint, None for free text.
        json_schema: the JSON Schema of JSON outputs (what the prompt describes; a JSON Schema
            output is validated against it), else None.
        adapter: Pydantic's validator of the type (TYPE), or of any JSON (JSON_SCHEMA), else None.
        labels: for a type that is one of a few strings (a Literal of strings, a str-valued Enum),
            the strings. The model writes the bare label, `positive` rather than `"positive"`: small
            models classify far better in words than in JSON strings.
    """

    output: Any
    kind: OutputKind
    constraint: Constraint | None
    json_schema: dict[str, Any] | None
    adapter: TypeAdapter[Any] | None
    labels: tuple[str, ...] | None = None

    @property
    def is_validated(self) -> bool:
        """Whether a grammatical output can still fail validation (Pydantic validators, field
        constraints the grammar does not express): only then do `retries` make sense."""
        return self.kind is OutputKind.TYPE

    def parse(self, text: str) -> Any:
        """The value of an answer text.

        Raises:
            pydantic.ValidationError: the text is not valid JSON, or the value fails validation (the
                caller maps it to `sdk.ValidationError`, adding the usage it knows).
        """
        if self.adapter is None:
            return text
        if self.labels is not None:
            return self.adapter.validate_python(text)
        return self.adapter.validate_json(text)

    def render(self, value: Any, field: str) -> str:
        """The text a model should write for `value` (few-shot examples show answers this way).

        Raises:
            RequestError: `value` is not a value of this output type (`field` names where it came from).
        """
        if self.adapter is None:
            if not isinstance(value, str):
                raise RequestError(f"expected a str for a text output, got {type(value).__name__}", field)
            if self.constraint is not None and not self.constraint.accepts(value):
                raise RequestError(f"{value!r} is not in the output's language", field)
            return value
        try:
            checked = self.adapter.validate_python(value)
        except pydantic.ValidationError as exc:
            raise RequestError(f"not a valid output value: {exc.errors(include_url=False)}", field) from exc
        plain = self.adapter.dump_python(checked, mode="json")
        if self.kind is OutputKind.JSON_SCHEMA:  # its adapter takes any JSON: the schema decides
            error = jsonschema.exceptions.best_match(self.schema_validator().iter_errors(plain))
            if error is not None:
                raise RequestError(f"not valid against the output schema: {error.message}", field)
        return plain if self.labels is not None else json.dumps(plain, ensure_ascii=False)

    def schema_validator(self) -> Any:
        """A `jsonschema` validator of `json_schema` (JSON outputs only), with format checks; remote
        `$ref`s resolve from a `Schema`'s resources only (never fetched, as when compiling). What
        checks a value whose text the constraint did not produce (a remote server's answer)."""
        resources = self.output.resources if isinstance(self.output, grammars.Schema) else None
        return json_schema_validator(self.json_schema, resources or {})

    def describe(self) -> str | None:
        """How the prompt tells the model what to write (None: nothing to say, free text); see
        `sdk.schema_text.describe_output`."""
        return describe_output(self)

    def check_vote_key(self, key: object) -> None:
        """Check, before generating, that a `vote_on=` field name exists in the output; see
        `sdk.voting.check_vote_key`.

        Raises:
            RequestError: the output has no such field, or `vote_on` is neither a name nor callable.
        """
        check_vote_key(self, key)


_cache: dict[object, OutputSpec] = {}
_cache_lock = threading.Lock()


def output_spec(output: Any) -> OutputSpec:
    """Resolve an `output=` argument (cached per output type).

    Raises:
        UnsupportedOutputTypeError: `output` is not None, a type, a JSON Schema dict or a
            grammars.Regex / Lark / GBNF / Choice / Schema, or Pydantic cannot build a validator or schema for it.
        grammars.UnsupportedSchemaError, grammars.GrammarError: the engine cannot compile it.
    """
    key = _cache_key(output)
    found = _cache.get(key) if key is not None else None
    if found is not None:
        return found
    spec = _resolve(output)
    if key is not None:
        with _cache_lock:
            _cache[key] = spec
    return spec


def _cache_key(output: Any) -> object | None:
    """Key order counts (properties are written in declared order) and so does the order of a
    Literal's or a union's members (`Literal["b", "a"] == Literal["a", "b"]` in `typing`)."""
    if isinstance(output, Mapping):
        return ("schema", json.dumps(output, default=str))
    if isinstance(output, grammars.Schema):
        options = [output.lenient, output.resources, output.whitespace, output.indent]
        return ("schema_spec", json.dumps([output.schema, *options], default=str))
    try:
        hash(output)
    except TypeError:
        return None
    return ("spec", output, repr(output))


def _resolve(output: Any) -> OutputSpec:
    if output is None or output is str:
        return OutputSpec(output, OutputKind.TEXT, None, None, None)
    if isinstance(output, (grammars.Regex, grammars.Lark, grammars.GBNF, grammars.Choice)):
        return OutputSpec(output, OutputKind.GRAMMAR, grammars.compile(output), None, None)
    if isinstance(output, Mapping):
        schema = dict(output)
        return OutputSpec(output, OutputKind.JSON_SCHEMA, grammars.compile(schema), schema, _ANY_JSON)
    if isinstance(output, grammars.Schema):
        described = output.schema if isinstance(output.schema, dict) else {} if output.schema else {"not": {}}
        return OutputSpec(output, OutputKind.JSON_SCHEMA, grammars.compile(output), described, _ANY_JSON)
    if not is_type_like(output):
        raise UnsupportedOutputTypeError(
            output, "expected None, a type, a JSON Schema dict, or a grammars.Regex, Lark, GBNF, Choice or Schema"
        )
    try:
        adapter: TypeAdapter[Any] = TypeAdapter(output)
    except pydantic.PydanticUserError as exc:
        raise UnsupportedOutputTypeError(output, str(exc).splitlines()[0]) from exc
    schema = type_schema(output)
    labels = _string_labels(schema)
    if labels is not None:
        return OutputSpec(output, OutputKind.TYPE, grammars.compile(grammars.Choice(labels)), schema, adapter, labels)
    return OutputSpec(output, OutputKind.TYPE, grammars.compile(output), schema, adapter)


def _string_labels(schema: dict[str, Any]) -> tuple[str, ...] | None:
    """The options of a schema that is exactly "one of these strings", else None."""
    options = schema.get("enum", [schema["const"]] if "const" in schema else None)
    annotations = {"enum", "const", "type", "title", "description"}
    if not options or set(schema) - annotations or not all(isinstance(o, str) and o for o in options):
        return None
    return tuple(options)


def is_type_like(output: Any) -> bool:
    """A class, or a typing construct (`list[int]`, `int | None`, `Literal[...]`, `Annotated[...]`)."""
    return isinstance(output, type) or typing.get_origin(output) is not None or output is Any


def json_schema_validator(schema: Any, resources: Mapping[str, Any]) -> Any:
    """The `jsonschema` validator of the schema's draft (2020-12 when it names none), with its format
    checker and `resources` as the only remote documents (nothing is fetched).

    Raises:
        grammars.SchemaError: `schema` is not valid against its draft's meta-schema.
    """
    validator_class = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        validator_class.check_schema(schema)
    except jsonschema.exceptions.SchemaError as exc:
        pointer = "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in exc.absolute_path)
        raise SchemaError(f"not a valid schema: {exc.message}", pointer) from exc
    # Resources without a `$schema` of their own are read in the schema's draft (anchors, `$id`s).
    draft = referencing.jsonschema.specification_with(
        validator_class.META_SCHEMA.get("$schema", ""), default=referencing.jsonschema.DRAFT202012
    )
    registry: referencing.Registry[Any] = referencing.Registry().with_resources(
        (uri, referencing.Resource.from_contents(document, default_specification=draft))
        for uri, document in resources.items()
    )
    return validator_class(schema, registry=registry, format_checker=validator_class.FORMAT_CHECKER)
