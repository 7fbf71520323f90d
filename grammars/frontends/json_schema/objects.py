"""Object keywords to `ObjT`: properties, patterns and additional keys as key rules, counts,
dependencies (`grammars.frontends.json_schema.object_grammar` turns an `ObjT` into rules)."""

from __future__ import annotations

import dataclasses
from typing import Protocol

from grammars.core import byte_regex as rx
from grammars.errors import SchemaError
from grammars.frontends.json_schema import readers
from grammars.frontends.json_schema.nodes import DNF, FALSE, Conj, KeyRule, LitT, ObjT, StrT
from grammars.frontends.json_schema.refs import Dialect, Loc
from grammars.frontends.json_schema.strings import (
    ANY_CONTENT,
    UnsupportedPattern,
    other_than,
    pattern_term,
    value_encodings,
)

#: Most key regions additional keys are split into (patterns overlapping in many ways).
MAX_KEY_REGIONS = 32
#: Most emission states (rules) one object alternative may need.
MAX_OBJECT_STATES = 20_000


class ObjectContext(Protocol):
    def normalize(self, conj: Conj) -> DNF: ...

    def unsupported(self, keyword: str, loc: Loc, reason: str) -> None: ...


# ----------------------------------------------------------------------------------------------
# Keywords -> ObjT
# ----------------------------------------------------------------------------------------------


def object_node(schema: dict, loc: Loc, dialect: Dialect, ctx: ObjectContext) -> ObjT:
    """The object alternative of a schema's object keywords.

    Raises:
        SchemaError: malformed keyword values; UnsupportedSchemaError: a key pattern that cannot be
            enforced (unless lenient).
    """
    properties = readers.schema_map(schema, "properties", loc) or {}
    patterns = readers.schema_map(schema, "patternProperties", loc) or {}
    additional = readers.subschema(schema, "additionalProperties", loc)
    required = readers.string_list(schema, "required", loc) or []
    names = list(properties) + [r for r in dict.fromkeys(required) if r not in properties]
    rules = [
        KeyRule(
            value_encodings(readers.property_name(n, loc.child("properties", n))),
            frozenset({loc.child("properties", n)}),
            n,
        )
        for n in properties
    ]
    pattern_terms: list[rx.Term] = []
    for pattern in patterns:
        try:
            term = pattern_term(pattern)
        except UnsupportedPattern as exc:
            ctx.unsupported("patternProperties", loc, str(exc))
            continue
        pattern_terms.append(term)
        rules.append(KeyRule(term, frozenset({loc.child("patternProperties", pattern)})))
    if additional is not None and additional is not True:
        rules.append(
            _every_key_but(frozenset(properties), pattern_terms, frozenset({loc.child("additionalProperties")}))
        )
    names_rule = _property_names_rule(schema, loc, ctx)
    if names_rule is not None:
        rules.append(names_rule)
    dependencies = _dependent_required(schema, loc)
    for source, targets in dependencies:
        names += [n for n in (source, *targets) if n not in names]
    max_props = readers.count(schema, "maxProperties", loc)
    return ObjT(
        tuple(names),
        tuple(rules),
        frozenset(required),
        readers.count(schema, "minProperties", loc) or 0,
        max_props,
        tuple(dependencies),
        frozenset(properties),
        tuple(pattern_terms),
        additional is not None,
    )


def _every_key_but(names: frozenset[str], patterns: list[rx.Term] | tuple[rx.Term, ...], value: Conj) -> KeyRule:
    """A rule for the keys that are none of `names` and match none of `patterns`."""
    keys = other_than(names)
    if patterns:
        keys = rx.difference(keys, rx.alt(*patterns))
    return KeyRule(keys, value, excluded=names, excluded_patterns=tuple(patterns))


def _property_names_rule(schema: dict, loc: Loc, ctx: ObjectContext) -> KeyRule | None:
    """`propertyNames` as a rule forbidding every key outside the names it admits."""
    if "propertyNames" not in schema:
        return None
    readers.subschema(schema, "propertyNames", loc)
    admitted = []
    for node in ctx.normalize(frozenset({loc.child("propertyNames")})):
        if isinstance(node, StrT):
            admitted.append(node.term)
        elif isinstance(node, LitT):
            admitted += [value_encodings(v.value) for v in node.values if isinstance(v.value, str)]
    allowed = rx.alt(*admitted)
    if allowed is ANY_CONTENT:
        return None
    return KeyRule(rx.difference(ANY_CONTENT, allowed), FALSE)


def _dependent_required(schema: dict, loc: Loc) -> list[tuple[str, tuple[str, ...]]]:
    found: list[tuple[str, tuple[str, ...]]] = []
    for keyword in ("dependentRequired", "dependencies"):
        value = schema.get(keyword)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise SchemaError(f"{keyword} must be an object", loc.child(keyword).pointer)
        for source, targets in value.items():
            if isinstance(targets, list) or keyword == "dependentRequired":
                if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
                    raise SchemaError(
                        f"{keyword}/{source} must be an array of strings", loc.child(keyword, source).pointer
                    )
                if targets:
                    found.append((source, tuple(dict.fromkeys(targets))))
    return found


def dependent_schema_locs(schema: dict, loc: Loc) -> list[tuple[str, Loc]]:
    """(key, schema location) of `dependentSchemas` and the schema form of `dependencies`."""
    found = []
    for keyword in ("dependentSchemas", "dependencies"):
        value = schema.get(keyword)
        if isinstance(value, dict):
            for source, target in value.items():
                if isinstance(target, (dict, bool)):
                    found.append((source, loc.child(keyword, source)))
                elif keyword == "dependentSchemas":
                    raise SchemaError(f"dependentSchemas/{source} must be a schema", loc.child(keyword, source).pointer)
    return found


def with_unevaluated(node: ObjT, conj: Conj) -> ObjT:
    """`unevaluatedProperties`: keys no keyword of this alternative evaluated must satisfy `conj`."""
    if node.evaluates_all:
        return node
    rule = _every_key_but(node.evaluated_names, node.evaluated_patterns, conj)
    return dataclasses.replace(node, rules=node.rules + (rule,), evaluates_all=True)
