"""Decisions about DNFs: does a concrete value satisfy one, does one provably admit nothing.

Membership filters `enum`/`const` values by their sibling keywords and finds uniqueness domains;
emptiness proves `oneOf` branches disjoint and drops empty key regions. Emptiness is a proof: True
means provably empty, None means not known within the budgets (and counts as possibly nonempty).
"""

from __future__ import annotations

from typing import Protocol

from grammars.core import byte_regex as rx
from grammars.errors import SchemaError
from grammars.frontends.json_schema import numbers
from grammars.frontends.json_schema.nodes import (
    DNF,
    FALSE,
    TRUE,
    ArrT,
    BoolT,
    Conj,
    LitT,
    NullT,
    NumT,
    ObjT,
    StrT,
    Typed,
    json_type,
    node_type,
    value_key,
)
from grammars.frontends.json_schema.strings import ANY_CONTENT, canonical_content, content_is_empty

#: How deep emptiness proofs and complements follow member schemas.
MAX_PROOF_DEPTH = 6


class SchemaCycle(SchemaError):
    """A schema that refers to itself without consuming input (`{"$ref": "#"}` at the root)."""


class Context(Protocol):
    """What the decisions and combinators need from the compiler."""

    #: Memo of emptiness proofs, per compilation: (conj, depth) -> result.
    proofs: dict[tuple[Conj, int], bool | None]
    #: Set while `intersect_dnf` proves products empty (proofs inside it stay shallow).
    pruning: bool

    def normalize(self, conj: Conj) -> DNF: ...

    def is_false(self, conj: Conj) -> bool: ...

    def check_alternatives(self, count: int) -> None: ...


def value_in(dnf: DNF, value: object, ctx: Context) -> bool:
    """Whether a JSON value satisfies a DNF."""
    return any(value_in_node(node, value, ctx) for node in dnf)


def value_in_node(node: Typed, value: object, ctx: Context) -> bool:
    """Whether a JSON value satisfies one typed alternative."""
    if isinstance(node, LitT):
        key = value_key(value)
        return any(v.key == key for v in node.values)
    kind = json_type(value)
    if node_type(node) != kind:
        return False
    if isinstance(node, (NullT,)):
        return True
    if isinstance(node, BoolT):
        return value in node.values
    if isinstance(node, NumT):
        return node.term is numbers.FULL or rx.matches(
            node.term, numbers.plain_text(numbers.to_fraction(value)).encode()
        )
    # The JSON types agree here: each isinstance below holds, and narrows `value` for the type checker.
    if isinstance(node, StrT):
        return isinstance(value, str) and (node.term is ANY_CONTENT or rx.matches(node.term, canonical_content(value)))
    if isinstance(node, ArrT):
        return isinstance(value, list) and _array_has(node, value, ctx)
    return isinstance(value, dict) and _object_has(node, value, ctx)


def _array_has(node: ArrT, items: list[object], ctx: Context) -> bool:
    if len(items) < node.min_items or (node.max_items is not None and len(items) > node.max_items):
        return False
    if not all(value_in(ctx.normalize(node.item_schema(i)), item, ctx) for i, item in enumerate(items)):
        return False
    for clause in node.contains:
        dnf = ctx.normalize(clause.schema)
        count = sum(1 for item in items if value_in(dnf, item, ctx))
        if count < clause.min or (clause.max is not None and count > clause.max):
            return False
    if node.unique:
        keys = [value_key(item) for item in items]
        return len(set(keys)) == len(keys)
    return True


def _object_has(node: ObjT, obj: dict[str, object], ctx: Context) -> bool:
    if len(obj) < node.min_props or (node.max_props is not None and len(obj) > node.max_props):
        return False
    if not node.required <= obj.keys():
        return False
    for source, targets in node.dependent_required:
        if source in obj and not all(t in obj for t in targets):
            return False
    for key, item in obj.items():
        content = canonical_content(key)
        for rule in node.rules:
            if rule.applies_to(key, content) and not value_in(ctx.normalize(rule.value), item, ctx):
                return False
    for clause in node.exists:
        if not any(
            clause.rule.applies_to(k, canonical_content(k)) and value_in(ctx.normalize(clause.rule.value), v, ctx)
            for k, v in obj.items()
        ):
            return False
    return True


def conj_is_empty(conj: Conj, ctx: Context, depth: int = 0) -> bool | None:
    """Whether the conjunction provably admits no value (memoized per compilation). Beyond
    MAX_PROOF_DEPTH only a literal `false` part counts, without normalizing anything."""
    if FALSE <= conj or ctx.is_false(conj):
        return True
    if depth > MAX_PROOF_DEPTH:
        return None
    key = (conj, depth)
    if key in ctx.proofs:
        return ctx.proofs[key]
    ctx.proofs[key] = None  # a proof that comes back here is circular: unknown
    try:
        dnf = ctx.normalize(conj)
    except (RecursionError, SchemaCycle):
        return None
    results = [node_is_empty(node, ctx, depth + 1) for node in dnf]
    result = True if all(r is True for r in results) else False if any(r is False for r in results) else None
    ctx.proofs[key] = result
    return result


def node_is_empty(node: Typed, ctx: Context, depth: int = 0) -> bool | None:
    """Whether a typed node provably admits no value (None: unknown)."""
    if isinstance(node, NullT):
        return False
    if isinstance(node, (BoolT, LitT)):
        return not node.values
    if isinstance(node, NumT):
        return rx.is_empty(rx.intersect(node.term, numbers.CANONICAL_INTEGER) if node.integer_text else node.term)
    if isinstance(node, StrT):
        return content_is_empty(node.term)
    if isinstance(node, ArrT):
        if node.max_items is not None and node.min_items > node.max_items:
            return True
        if any(
            conj_is_empty(node.item_schema(i), ctx, depth) is True
            for i in range(min(node.min_items, len(node.prefix) + 1))
        ):
            return True
        return False if node.min_items == 0 and all(c.min == 0 for c in node.contains) else None
    return _object_is_empty(node, ctx, depth)


def _object_is_empty(node: ObjT, ctx: Context, depth: int) -> bool | None:
    if node.max_props is not None and (node.min_props > node.max_props or len(node.required) > node.max_props):
        return True
    for name in node.required:
        content = canonical_content(name)
        value = TRUE.union(*(r.value for r in node.rules if r.applies_to(name, content)))
        if conj_is_empty(value, ctx, depth) is True:
            return True
    return False if not node.required and node.min_props == 0 and not node.exists else None
