"""What a command-line SCHEMA argument names: a JSON Schema, a Python type or a Lark grammar.

    schema.json                 a JSON Schema file        -> its document (a dict, or true / false)
    '{"type": "integer"}'       an inline JSON Schema     -> the dict
    grammar.lark                a Lark grammar file       -> sdk.Lark(text, import_paths=[its folder])
    package.module:Name         a Python type             -> the object (a Pydantic model, int, a Literal alias, ...)

`stencil validate` and `stencil run --output` read their argument through `load_spec`, so both accept
the same forms. Modules are imported from the current directory first, as `python -m` would.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import grammars
from runtime.errors import RequestError

__all__ = ["load_spec"]


def load_spec(argument: str, *, field: str = "schema") -> Any:
    """The specification a SCHEMA argument names (see the module docstring).

    Args:
        argument: the argument as given.
        field: the argument's name, for errors.

    Raises:
        RequestError: the file is missing or is not JSON, or the module or name cannot be imported
            (`field` names the argument).
    """
    if argument.lstrip().startswith("{"):
        return _parse_json(argument, "inline JSON Schema", field)
    path = Path(argument)
    if path.suffix == ".lark":
        return grammars.Lark(_read(path, field), import_paths=[str(path.resolve().parent)])
    if path.suffix == ".json" or path.exists() or ":" not in argument:
        return _parse_json(_read(path, field), str(path), field)
    return _import_object(argument, field)


def _read(path: Path, field: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RequestError(f"cannot read {str(path)!r}: {exc}", field) from exc


def _parse_json(text: str, where: str, field: str) -> Any:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RequestError(f"{where} is not JSON: {exc}", field) from exc
    if not isinstance(document, (dict, bool)):
        raise RequestError(f"{where} is not a JSON Schema (an object or a boolean)", field)
    return document


def _import_object(argument: str, field: str) -> Any:
    """`module:name` (dotted names after the colon reach nested attributes)."""
    module_name, _, attribute = argument.partition(":")
    if not module_name or not attribute:
        raise RequestError(f"expected a .json or .lark file or module:Name, got {argument!r}", field)
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # console scripts leave the current directory out
    try:
        found: Any = importlib.import_module(module_name)
    except (ImportError, SyntaxError) as exc:
        raise RequestError(f"cannot import module {module_name!r}: {exc}", field) from exc
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError as exc:
            raise RequestError(f"module {module_name!r} has no {attribute!r}", field) from exc
    return found
