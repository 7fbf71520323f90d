"""Tool definitions: what a model may call, as a name, a description and an arguments schema.

A tool comes from any of:

    a Python function (sync or async)    name = the function's, description = its docstring,
                                         arguments = a Pydantic model built from the signature's
                                         type hints (parameter descriptions from the docstring's
                                         Args section, defaults kept)
    a Pydantic model class               name = the class's, arguments = the model
    an OpenAI tool dict                  {"type": "function", "function": {"name", "description",
                                         "parameters", "strict"}}, or the inner function dict
    Tool.from_schema(name, schema)       a raw JSON Schema of the arguments object

Each tool's arguments schema is compiled on its own (`Tool.constraint`), so its `$defs` and `$ref`s
are scoped to that tool: two tools may each define `#/$defs/Item` differently. The schema of a
function or model is the one `output=` would use for the model (`grammars.frontends.types`:
objects closed). `strict: false` in an OpenAI dict compiles the schema leniently (keywords Stencil
cannot enforce warn and are ignored); otherwise such a keyword is a `ToolDefinitionError`.
"""

from __future__ import annotations

import inspect
import json
import re
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import docstring_parser
import jsonschema
import pydantic

import grammars
from grammars.compiler import Constraint
from grammars.errors import GrammarError
from grammars.frontends.types import type_schema
from sdk.tools.errors import ToolDefinitionError

__all__ = ["NAME_PATTERN", "Tool", "ToolLike", "Toolset", "as_tool", "toolset"]

#: Tool names OpenAI accepts; also what the call format writes unescaped inside a JSON string.
NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")

#: Where a tool's own errors point (`field`), until `as_tool` / `toolset` say which tool it is.
_HERE = "tool"

#: What `tools=` accepts, item by item.
ToolLike = Any


@dataclass(frozen=True, eq=False)
class Tool:
    """One tool the model may call.

    Attributes:
        name: what the model writes to call it (`NAME_PATTERN`).
        description: what it does, for the prompt.
        parameters: the JSON Schema of its arguments, an object schema.
        model: the Pydantic model that validates the arguments (functions and models), else None
            (raw schemas: the arguments are validated against `parameters` and stay a dict).
        function: what `ToolCall.invoke` runs (functions only).
        strict: False compiles `parameters` leniently (OpenAI's `strict`; None when not given).
    """

    name: str
    description: str
    parameters: dict[str, Any]
    model: type[pydantic.BaseModel] | None = None
    function: Callable[..., Any] | None = field(default=None, repr=False)
    strict: bool | None = None

    @classmethod
    def from_function(cls, function: Callable[..., Any], *, name: str | None = None) -> Tool:
        """A tool that runs `function`; its arguments model is built from the signature.

        Raises:
            ToolDefinitionError: a parameter without a type hint, or `*args` / `**kwargs`.
        """
        tool_name = name or str(getattr(function, "__name__", ""))
        docs = docstring_parser.parse(inspect.getdoc(function) or "")
        described = {param.arg_name: param.description for param in docs.params}
        hints = typing.get_type_hints(function, include_extras=True)
        fields: dict[str, Any] = {}
        for parameter in inspect.signature(function).parameters.values():
            where = f"{_HERE}.{parameter.name}"
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                raise ToolDefinitionError("*args and **kwargs cannot be tool arguments", where)
            if parameter.name not in hints:
                raise ToolDefinitionError("has no type hint, so its argument cannot be constrained", where)
            default = ... if parameter.default is parameter.empty else parameter.default
            fields[parameter.name] = (
                hints[parameter.name],
                pydantic.Field(default, description=described.get(parameter.name)),
            )
        model_name = "".join(part.title() for part in tool_name.split("_")) + "Arguments"
        model = pydantic.create_model(model_name, **fields)
        description = "\n\n".join(part for part in (docs.short_description, docs.long_description) if part)
        return cls._checked(tool_name, description, _model_schema(model), model, function, None)

    @classmethod
    def from_model(cls, model: type[pydantic.BaseModel], *, name: str | None = None) -> Tool:
        """A tool whose arguments are `model` (its class docstring describes it)."""
        description = inspect.cleandoc(model.__dict__.get("__doc__") or "")
        tool_name = name or model.__name__
        return cls._checked(tool_name, description, _model_schema(model), model, None, None)

    @classmethod
    def from_schema(
        cls, name: str, parameters: Mapping[str, Any] | None, *, description: str = "", strict: bool | None = None
    ) -> Tool:
        """A tool whose arguments are the JSON object `parameters` describes (None: no arguments)."""
        return cls._checked(name, description, _object_schema(parameters), None, None, strict)

    @classmethod
    def from_openai(cls, definition: Mapping[str, Any]) -> Tool:
        """A tool from an OpenAI tool dict, or from its inner "function" dict.

        Raises:
            ToolDefinitionError: a missing name, an unknown type, fields of the wrong type (`field`
                is "tool" extended to the offending key, e.g. "tool.function.name").
        """
        function: object = definition
        field = _HERE
        if "type" in definition or "function" in definition:
            if definition.get("type", "function") != "function":
                raise ToolDefinitionError(f"unsupported tool type {definition.get('type')!r}", f"{field}.type")
            function, field = definition.get("function"), f"{field}.function"
        if not isinstance(function, Mapping):
            raise ToolDefinitionError("expected an object with name and parameters", field)
        name, description = function.get("name"), function.get("description") or ""
        parameters, strict = function.get("parameters"), function.get("strict")
        if not isinstance(name, str):
            raise ToolDefinitionError("expected a str", f"{field}.name")
        if not isinstance(description, str):
            raise ToolDefinitionError("expected a str", f"{field}.description")
        if parameters is not None and not isinstance(parameters, Mapping):
            raise ToolDefinitionError("expected a JSON Schema object", f"{field}.parameters")
        if strict is not None and not isinstance(strict, bool):
            raise ToolDefinitionError("expected a bool", f"{field}.strict")
        try:
            return cls.from_schema(name, parameters, description=description, strict=strict)
        except ToolDefinitionError as exc:
            raise ToolDefinitionError(exc.reason, field + exc.field.removeprefix(_HERE)) from exc

    @classmethod
    def _checked(
        cls,
        name: str,
        description: str,
        parameters: dict[str, Any],
        model: type[pydantic.BaseModel] | None,
        function: Callable[..., Any] | None,
        strict: bool | None,
    ) -> Tool:
        if not NAME_PATTERN.fullmatch(name):
            raise ToolDefinitionError(f"tool name {name!r} must match {NAME_PATTERN.pattern}", f"{_HERE}.name")
        return cls(name, description, parameters, model, function, strict)

    @cached_property
    def constraint(self) -> Constraint:
        """The compiled constraint of the arguments object (cached by `grammars.compile` too).

        Raises:
            ToolDefinitionError: the schema cannot be enforced (the grammar error is the cause).
        """
        try:
            return grammars.compile(self.parameters, lenient=self.strict is False)
        except GrammarError as exc:
            raise ToolDefinitionError(f"cannot constrain the arguments: {exc}", f"{_HERE}.parameters") from exc

    def validate_arguments(self, arguments_json: str) -> Any:
        """The arguments as `model` instance (or, for raw schemas, as the checked dict).

        Raises:
            pydantic.ValidationError: not JSON, or the model rejects them.
            jsonschema.ValidationError: (raw schemas) not valid against `parameters`.
        """
        if self.model is not None:
            return self.model.model_validate_json(arguments_json)
        value = json.loads(arguments_json)
        jsonschema.validate(value, self.parameters, format_checker=jsonschema.FormatChecker())
        return value

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI tool dict (what chat templates' `tools` variable and the wire format hold)."""
        function: dict[str, Any] = {"name": self.name, "description": self.description, "parameters": self.parameters}
        if self.strict is not None:
            function["strict"] = self.strict
        return {"type": "function", "function": function}


@dataclass(frozen=True)
class Toolset:
    """The tools of one call, by name, in the order given (names unique)."""

    tools: tuple[Tool, ...]

    def __iter__(self) -> Iterator[Tool]:
        return iter(self.tools)

    def __len__(self) -> int:
        return len(self.tools)

    def get(self, name: str) -> Tool | None:
        """The tool called `name`, or None."""
        return next((tool for tool in self.tools if tool.name == name), None)


def as_tool(item: ToolLike, *, field: str = "tools[0]") -> Tool:
    """A `Tool` from anything `tools=` accepts (see the module docstring).

    Raises:
        ToolDefinitionError: `item` is none of those, or cannot be described (`field` says which).
    """
    if isinstance(item, Tool):
        return item
    try:
        if isinstance(item, type) and issubclass(item, pydantic.BaseModel):
            return Tool.from_model(item)
        if isinstance(item, Mapping):
            return Tool.from_openai(item)
        if callable(item):
            return Tool.from_function(item)
    except ToolDefinitionError as exc:
        raise _located(exc, field) from exc
    raise ToolDefinitionError(
        f"expected a function, a Pydantic model class, an OpenAI tool dict or an sdk.Tool, got {type(item).__name__}",
        field,
    )


def toolset(tools: Sequence[ToolLike], *, field: str = "tools") -> Toolset:
    """The `Toolset` of a `tools=` argument, each tool's constraint compiled.

    Raises:
        ToolDefinitionError: an empty list, a tool that cannot be described or constrained, or two
            tools with one name.
    """
    if isinstance(tools, (str, bytes, Mapping)) or not isinstance(tools, Sequence):
        raise ToolDefinitionError(f"expected a list of tools, got {type(tools).__name__}", field)
    if not tools:
        raise ToolDefinitionError("is empty; leave tools out for a call without tools", field)
    resolved: list[Tool] = []
    for index, item in enumerate(tools):
        where = f"{field}[{index}]"
        tool = as_tool(item, field=where)
        if any(other.name == tool.name for other in resolved):
            raise ToolDefinitionError(f"a second tool named {tool.name!r}", f"{where}.name")
        try:
            tool.constraint  # noqa: B018 (compiled now, so an unenforceable schema fails before generating)
        except ToolDefinitionError as exc:
            raise _located(exc, where) from exc
        resolved.append(tool)
    return Toolset(tuple(resolved))


def _located(exc: ToolDefinitionError, field: str) -> ToolDefinitionError:
    """`exc` with its field under `field` (e.g. "tool.city" -> "tools[1].city")."""
    return ToolDefinitionError(exc.reason, field + exc.field.removeprefix(_HERE))


def _model_schema(model: type[pydantic.BaseModel]) -> dict[str, Any]:
    try:
        schema = type_schema(model)
    except GrammarError as exc:
        raise ToolDefinitionError(f"the arguments have no exact JSON Schema: {exc}", _HERE) from exc
    return _object_schema(schema)


def _object_schema(schema: Mapping[str, Any] | None) -> dict[str, Any]:
    """`schema` as an object schema: no schema means no arguments, a missing `type` is "object".

    Raises:
        ToolDefinitionError: a schema whose `type` is not "object" (arguments are a JSON object).
    """
    if schema is None or not schema:
        return {"type": "object", "properties": {}, "additionalProperties": False}
    if schema.get("type", "object") != "object":
        raise ToolDefinitionError(
            f"arguments are a JSON object; the schema's type is {schema.get('type')!r}", f"{_HERE}.parameters"
        )
    return {**schema, "type": "object"}
