"""What the prompt says the model should write: the output's form, the way a model reads it.

`describe_output` turns a resolved output into one instruction: its labels, the shape of its JSON,
its regex or its grammar. A JSON Schema is written as the shape of the expected JSON, not the schema.

Small models copy what they see, so `{"name": string, "age": integer}` works better in a prompt
than the schema document that says the same. Field descriptions become `//` comments, enums and
constants become their literal values joined by `|`, `$ref`s are expanded (a recursive reference
is written by its name), and a field's type is written once however deeply it nests.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from grammars.specs import Choice, Lark, Regex

if TYPE_CHECKING:
    from sdk.outputs import OutputSpec

__all__ = ["describe_output", "describe_schema"]

#: Deepest nesting written out in full; deeper objects are written as `object`.
MAX_DEPTH = 6
_INDENT = "  "


def describe_output(spec: OutputSpec) -> str | None:
    """How the prompt tells the model what to write.

    Args:
        spec: the resolved output.

    Returns:
        One instruction, or None for free text (nothing to say).
    """
    output = spec.output
    if spec.labels is not None:
        return "Respond with exactly one of: " + ", ".join(spec.labels) + "."
    if spec.json_schema is not None:
        return "Respond with JSON of this form:\n" + describe_schema(spec.json_schema)
    if isinstance(output, Choice):
        return "Respond with exactly one of: " + ", ".join(output.options) + "."
    if isinstance(output, Regex):
        return f"Respond with text that matches the regular expression {output.pattern}"
    if isinstance(output, Lark):
        return f"Respond with text in this grammar (Lark syntax, start rule {output.start!r}):\n{output.text}"
    return None


def describe_schema(schema: Mapping[str, Any] | bool) -> str:
    """The shape of the JSON that `schema` accepts, as a short multi-line text.

    Args:
        schema: a JSON Schema (dict or bool).

    Returns:
        E.g. '{\\n  "name": string,\\n  "age": integer  // in years\\n}'.
    """
    defs = _definitions(schema) if isinstance(schema, Mapping) else {}
    return _Writer(defs).shape(schema, depth=0, seen=())


def _definitions(schema: Mapping[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for section in ("$defs", "definitions"):
        for name, sub in (schema.get(section) or {}).items():
            found[f"#/{section}/{name}"] = sub
    return found


class _Writer:
    def __init__(self, defs: Mapping[str, Any]) -> None:
        self.defs = defs

    def shape(self, schema: Any, *, depth: int, seen: tuple[str, ...]) -> str:
        if schema is True or schema == {}:
            return "any"
        if schema is False:
            return "nothing"
        ref = schema.get("$ref")
        if isinstance(ref, str):
            if ref in seen or ref not in self.defs:
                return ref.rsplit("/", 1)[-1]
            return self.shape(self.defs[ref], depth=depth, seen=(*seen, ref))
        if "const" in schema:
            return json.dumps(schema["const"], ensure_ascii=False)
        if "enum" in schema:
            return " | ".join(json.dumps(v, ensure_ascii=False) for v in schema["enum"])
        for combinator in ("anyOf", "oneOf"):
            if combinator in schema:
                return " | ".join(self.shape(s, depth=depth, seen=seen) for s in schema[combinator])
        if "allOf" in schema and len(schema["allOf"]) == 1:
            return self.shape(schema["allOf"][0], depth=depth, seen=seen)
        kind = schema.get("type")
        if isinstance(kind, list):
            return " | ".join(self.shape({**schema, "type": k}, depth=depth, seen=seen) for k in kind)
        if kind == "object" or "properties" in schema:
            return self._object(schema, depth=depth, seen=seen)
        if kind == "array":
            return self._array(schema, depth=depth, seen=seen)
        if kind == "string" and "format" in schema:
            return f"string ({schema['format']})"
        return kind if isinstance(kind, str) else "any"

    def _object(self, schema: Mapping[str, Any], *, depth: int, seen: tuple[str, ...]) -> str:
        properties: Mapping[str, Any] = schema.get("properties") or {}
        if not properties or depth >= MAX_DEPTH:
            extra = schema.get("additionalProperties")
            if isinstance(extra, Mapping) and extra:
                return f"{{string: {self.shape(extra, depth=depth + 1, seen=seen)}}}"
            return "object"
        required = set(schema.get("required") or ())
        pad = _INDENT * (depth + 1)
        lines = []
        for index, (name, sub) in enumerate(properties.items()):
            comma = "," if index < len(properties) - 1 else ""
            description = sub.get("description") if isinstance(sub, Mapping) else None
            notes = [" ".join(str(description).split())] if description else []
            if name not in required:
                notes.append("optional")
            comment = f"  // {'; '.join(notes)}" if notes else ""
            value = self.shape(sub, depth=depth + 1, seen=seen)
            lines.append(f"{pad}{json.dumps(name, ensure_ascii=False)}: {value}{comma}{comment}")
        return "{\n" + "\n".join(lines) + "\n" + _INDENT * depth + "}"

    def _array(self, schema: Mapping[str, Any], *, depth: int, seen: tuple[str, ...]) -> str:
        prefix = schema.get("prefixItems")
        if isinstance(prefix, list) and prefix:
            return "[" + ", ".join(self.shape(s, depth=depth + 1, seen=seen) for s in prefix) + "]"
        items = schema.get("items", True)
        return f"[{self.shape(items, depth=depth, seen=seen)}, ...]"
