"""The canonical text of an instance: what the schema's grammar emits for that value.

The grammar emits object keys in the schema's declared order, numbers in plain decimal (integral
values as integers, so `1.0` is written `1`), strings as `json.dumps(..., ensure_ascii=False)`, and
whitespace per the policy. Tests and benchmarks that check "is this instance accepted" must present
this text: a value has many JSON spellings, the grammar deliberately admits one order of keys.

Key order is read from the normalized schema: at each object, the alternative that admits the value
(else the one declaring most of its keys) gives the order of its named keys, then the remaining keys
in their original order; a literal (`enum`/`const`) keeps its own order.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping

from grammars.errors import UnsupportedSchemaWarning
from grammars.frontends.json_schema import numbers
from grammars.frontends.json_schema.compiler import SchemaCompiler
from grammars.frontends.json_schema.decide import value_in_node
from grammars.frontends.json_schema.layout import Layout
from grammars.frontends.json_schema.nodes import DNF, TRUE, ArrT, Conj, LitT, ObjT, json_type, value_key
from grammars.frontends.json_schema.refs import SchemaRegistry
from grammars.frontends.json_schema.strings import canonical_content


def canonical_json(
    schema: dict | bool,
    instance: object,
    *,
    whitespace: str = "flexible",
    indent: int | None = None,
    resources: Mapping[str, object] | None = None,
) -> str:
    """The text the grammar of `schema` emits for `instance` (see the module docstring).

    Args:
        schema, whitespace, indent, resources: as for `schema_grammar`.
        instance: a JSON value (Python objects as `json.loads` gives them).
    Returns:
        The text; with whitespace "flexible" or "spaced" it uses ", " and ": " (`json.dumps` default).
    Raises:
        SchemaError, ConstraintLimitError: as `schema_grammar`, when the schema cannot be normalized.
    """
    return CanonicalWriter(schema, whitespace=whitespace, indent=indent, resources=resources).text(instance)


class CanonicalWriter:
    """Writes canonical texts of many instances of one schema (the schema is normalized once).

    Args: as `canonical_json`. Keywords the grammar would refuse are tolerated: only key order matters.
    """

    def __init__(
        self,
        schema: dict | bool,
        *,
        whitespace: str = "flexible",
        indent: int | None = None,
        resources: Mapping[str, object] | None = None,
    ) -> None:
        registry = SchemaRegistry(schema, resources=resources)
        self._compiler = SchemaCompiler(registry, Layout(whitespace, indent), lenient=True)
        self._root = frozenset({registry.root})
        self._indent = indent
        self._item_sep, self._key_sep = (",", ":") if whitespace == "compact" and indent is None else (", ", ": ")
        if indent is not None:
            self._item_sep = ","

    def text(self, instance: object) -> str:
        """The canonical text of one instance."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UnsupportedSchemaWarning)
            ordered = _ordered(self._compiler, self._root, instance)
        return _dump(ordered, self._item_sep, self._key_sep, self._indent, 0)


def _ordered(compiler: SchemaCompiler, conj: Conj, value: object) -> object:
    if not isinstance(value, (list, dict)):
        return value
    dnf = compiler.normalize(conj)
    literal = _matching_literal(dnf, value)
    if literal is not None:
        return literal
    if isinstance(value, list):
        arrays = [a for a in dnf if isinstance(a, ArrT)]
        array = next((a for a in arrays if value_in_node(a, value, compiler)), arrays[0] if arrays else None)
        return [_ordered(compiler, array.item_schema(i) if array else TRUE, item) for i, item in enumerate(value)]
    objects = [a for a in dnf if isinstance(a, ObjT)]
    node = next((a for a in objects if value_in_node(a, value, compiler)), None)
    if node is None and objects:
        node = max(objects, key=lambda a: sum(1 for k in value if k in a.names))
    names = [n for n in (node.names if node else ()) if n in value]
    keys = names + [k for k in value if k not in names]
    result: dict[str, object] = {}
    for key in keys:
        content = canonical_content(key)
        child = TRUE.union(*(r.value for r in node.rules if r.applies_to(key, content))) if node else TRUE
        result[key] = _ordered(compiler, child, value[key])
    return result


def _matching_literal(dnf: DNF, value: object) -> object | None:
    key = value_key(value)
    for node in dnf:
        if isinstance(node, LitT):
            for member in node.values:
                if member.key == key:
                    return member.value
    return None


def _dump(value: object, item_sep: str, key_sep: str, indent: int | None, depth: int) -> str:
    if isinstance(value, list):
        parts = [_dump(v, item_sep, key_sep, indent, depth + 1) for v in value]
        open_, close = "[", "]"
    elif isinstance(value, dict):
        parts = [
            json.dumps(k, ensure_ascii=False) + key_sep + _dump(v, item_sep, key_sep, indent, depth + 1)
            for k, v in value.items()
        ]
        open_, close = "{", "}"
    elif json_type(value) == "number" and not isinstance(value, bool):
        return numbers.plain_text(numbers.to_fraction(value))
    else:
        return json.dumps(value, ensure_ascii=False)
    if not parts:
        return open_ + close
    if indent is None:
        return open_ + item_sep.join(parts) + close
    inner = "\n" + " " * (indent * (depth + 1))
    return open_ + inner + ("," + inner).join(parts) + "\n" + " " * (indent * depth) + close
