"""Array keywords to `ArrT`, and `ArrT` to grammar: positional items, counters, contains, uniqueness.

Plain arrays are a chain over the positional (`prefixItems`) schemas followed by one counted
repetition of the item schema (`minItems`/`maxItems` stay counters: `maxItems: 100000` is one parser
node). `contains` splits the item schema into its matching and non-matching parts (the latter needs
the complement of the `contains` schema) and counts matches in the rule state. `uniqueItems` is
enforced where it can be exactly: at most one item, positional items that are pairwise disjoint with
no further items, or items drawn from a finite domain of at most MAX_UNIQUE_DOMAIN values (one rule
per subset of values used so far). Anything else raises (or warns under lenient).
"""

from __future__ import annotations

from itertools import product
from typing import Protocol

from grammars.core import ir
from grammars.errors import ConstraintLimitError
from grammars.frontends.json_schema import readers
from grammars.frontends.json_schema.combinators import NotExact, are_disjoint, complement
from grammars.frontends.json_schema.decide import Context
from grammars.frontends.json_schema.layout import Layout
from grammars.frontends.json_schema.nodes import (
    TRUE,
    ArrT,
    BoolT,
    Conj,
    Contains,
    LitT,
    NullT,
    Synth,
    Value,
    make_value,
)
from grammars.frontends.json_schema.refs import Dialect, Loc

#: Largest finite item domain `uniqueItems` is enforced over (2**n rules).
MAX_UNIQUE_DOMAIN = 8
#: Largest count `minContains`/`maxContains`/`maxItems` may have when matches are counted.
MAX_COUNTED = 16
#: Most `contains` clauses one array alternative may count (each doubles the item variants).
MAX_CONTAINS_CLAUSES = 3
#: Most rules the counting of `contains` matches may need.
MAX_CONTAINS_STATES = 2_000


class ArrayContext(Context, Protocol):
    """What array emission needs from the compiler (uniqueness and `contains` decide and complement)."""

    layout: Layout

    def unsupported(self, keyword: str, loc: Loc | None, reason: str) -> None: ...

    def value_rule(self, conj: Conj, depth: int) -> ir.Expr: ...

    def literal(self, value: Value, depth: int) -> ir.Expr: ...

    def reserve(self, hint: str) -> str: ...

    def set_rule(self, name: str, expr: ir.Expr) -> None: ...


def array_node(schema: dict, loc: Loc, dialect: Dialect) -> ArrT:
    """The array alternative of a schema's array keywords.

    Raises:
        SchemaError: malformed keyword values.
    """
    items = schema.get("items")
    if isinstance(items, list):  # drafts 4-2019 (accepted in 2020-12 too, as those schemas abound)
        readers.schema_list(schema, "items", loc)
        prefix = tuple(frozenset({loc.child("items", i)}) for i in range(len(items)))
        has_rest = readers.subschema(schema, "additionalItems", loc) is not None
        rest = frozenset({loc.child("additionalItems")}) if has_rest else TRUE
    else:
        readers.subschema(schema, "items", loc)
        prefix_schemas = readers.schema_list(schema, "prefixItems", loc) or []
        prefix = tuple(frozenset({loc.child("prefixItems", i)}) for i in range(len(prefix_schemas)))
        has_rest = items is not None
        rest = frozenset({loc.child("items")}) if has_rest else TRUE
    contains: tuple[Contains, ...] = ()
    if "contains" in schema:
        readers.subschema(schema, "contains", loc)
        min_contains = readers.count(schema, "minContains", loc)
        max_contains = readers.count(schema, "maxContains", loc)
        low = 1 if min_contains is None else min_contains
        if low > 0 or max_contains is not None:
            contains = (Contains(frozenset({loc.child("contains")}), low, max_contains),)
    return ArrT(
        prefix,
        rest,
        readers.count(schema, "minItems", loc) or 0,
        readers.count(schema, "maxItems", loc),
        contains,
        bool(readers.boolean(schema, "uniqueItems", loc)),
        len(prefix),
        has_rest,
    )


def with_unevaluated(node: ArrT, conj: Conj) -> ArrT | None:
    """`unevaluatedItems`: items past the evaluated prefix must satisfy `conj`; None when it cannot
    be decided which items `contains` evaluated."""
    if node.evaluates_all:
        return node
    if node.contains:
        return None
    prefix = tuple(s if i < node.evaluated_prefix else s | conj for i, s in enumerate(node.prefix))
    return ArrT(
        prefix,
        node.items | conj,
        node.min_items,
        node.max_items,
        node.contains,
        node.unique,
        node.evaluated_prefix,
        True,
    )


def emit_array(node: ArrT, depth: int, ctx: ArrayContext, hint: str, where: Loc | None) -> ir.Expr:
    """The grammar of one array alternative at nesting `depth` (see the module docstring)."""
    if node.unique and not _trivially_unique(node, ctx):
        if node.contains:
            ctx.unsupported("uniqueItems", where, "uniqueItems together with contains cannot be enforced")
        else:
            domain = _finite_domain(node, ctx)
            if domain is not None:
                return _unique_over_domain(node, domain, depth, ctx, hint)
            ctx.unsupported("uniqueItems", where, "items are not drawn from a small finite domain")
    if node.contains:
        expr = _with_contains(node, depth, ctx, hint, where)
        if expr is not None:
            return expr
    return _plain(node, depth, ctx)


def _plain(node: ArrT, depth: int, ctx: ArrayContext) -> ir.Expr:
    layout = ctx.layout
    comma, close = layout.comma(depth), layout.close("]", depth)
    low, high = node.min_items, node.max_items
    count = len(node.prefix)
    item = ir.NOTHING if ctx.is_false(node.items) else ctx.value_rule(node.items, depth + 1)
    if count == 0:
        options = [layout.empty("[]")] if low == 0 else []
        if high is None or high > 0:
            more = ir.repeat(ir.seq(comma, item), max(low - 1, 0), None if high is None else high - 1)
            options.append(ir.seq(layout.open("[", depth), item, more, close))
        return ir.alt(*options)
    tail = ir.seq(
        ir.repeat(ir.seq(comma, item), max(low - count, 0), None if high is None else max(high - count, 0)), close
    )
    for index in range(count - 1, -1, -1):
        lead = layout.open("[", depth) if index == 0 else comma
        end = (layout.empty("[]") if index == 0 else close) if index >= low else ir.NOTHING
        step = (
            ir.seq(lead, ctx.value_rule(node.prefix[index], depth + 1), tail)
            if high is None or index < high
            else ir.NOTHING
        )
        tail = ir.alt(end, step)
    return tail


def _trivially_unique(node: ArrT, ctx: ArrayContext) -> bool:
    """At most one item, or only positional items that are pairwise disjoint."""
    if node.max_items is not None and node.max_items <= 1:
        return True
    if not ctx.is_false(node.items) or len(node.prefix) > 10:
        return False
    dnfs = [ctx.normalize(s) for s in node.prefix]
    return all(are_disjoint(dnfs[i], dnfs[j], ctx) for i in range(len(dnfs)) for j in range(i))


def _finite_domain(node: ArrT, ctx: ArrayContext) -> tuple[list[Value], list[frozenset[int]], frozenset[int]] | None:
    """The values items may take, when finite and small: (values, the indices allowed at each
    positional item, the indices allowed after them); None otherwise."""
    values: dict[str, int] = {}
    found: list[Value] = []

    def indices(conj: Conj) -> frozenset[int] | None:
        chosen = set()
        for alt in ctx.normalize(conj):
            if isinstance(alt, NullT):
                members = [make_value(None)]
            elif isinstance(alt, BoolT):
                members = [make_value(b) for b in sorted(alt.values)]
            elif isinstance(alt, LitT):
                members = list(alt.values)
            else:
                return None
            for member in members:
                if member.key not in values:
                    values[member.key] = len(found)
                    found.append(member)
                chosen.add(values[member.key])
        return frozenset(chosen)

    positions = [indices(schema) for schema in node.prefix]
    known = [p for p in positions if p is not None]
    rest = frozenset() if ctx.is_false(node.items) else indices(node.items)
    if rest is None or len(known) < len(positions) or len(found) > MAX_UNIQUE_DOMAIN:
        return None
    return found, known, rest


def _unique_over_domain(node: ArrT, domain, depth: int, ctx: ArrayContext, hint: str) -> ir.Expr:
    """Arrays of distinct values from a finite domain: one rule per set of values used (its size is
    the position)."""
    values, positions, rest = domain
    layout = ctx.layout
    literals = [ctx.literal(v, depth + 1) for v in values]
    names: dict[int, str] = {}

    def state(used: int) -> ir.Expr:
        if used not in names:
            names[used] = ctx.reserve(f"{hint}_unique")
            index = bin(used).count("1")
            options = []
            if index >= node.min_items:
                options.append(layout.empty("[]") if index == 0 else layout.close("]", depth))
            if node.max_items is None or index < node.max_items:
                lead = layout.open("[", depth) if index == 0 else layout.comma(depth)
                allowed = positions[index] if index < len(positions) else rest
                options += [
                    ir.seq(lead, literals[i], state(used | 1 << i)) for i in sorted(allowed) if not used >> i & 1
                ]
            ctx.set_rule(names[used], ir.alt(*options))
        return ir.Ref(names[used])

    return state(0)


def _with_contains(node: ArrT, depth: int, ctx: ArrayContext, hint: str, where: Loc | None) -> ir.Expr | None:
    """Arrays counting, for each `contains` clause, the items that match it; None after reporting
    under lenient. Each item is emitted in one variant per set of clauses it matches (its schema
    intersected with those clauses and the complements of the others)."""
    clauses = node.contains
    limits = [c for clause in clauses for c in (clause.min, clause.max) if c is not None]
    if (
        len(clauses) > MAX_CONTAINS_CLAUSES
        or any(c > MAX_COUNTED for c in limits)
        or (node.max_items or 0) > MAX_COUNTED
    ):
        ctx.unsupported(
            "contains",
            where,
            f"more than {MAX_CONTAINS_CLAUSES} contains clauses or counts above {MAX_COUNTED} cannot be enforced",
        )
        return None
    try:
        negated = [frozenset({Synth(complement(ctx.normalize(c.schema), ctx))}) for c in clauses]
    except NotExact as exc:
        ctx.unsupported("contains", where, f"the complement of the contains schema is needed: {exc}")
        return None
    layout = ctx.layout
    last_position = len(node.prefix)
    cap_items = max(node.min_items, last_position, 1) if node.max_items is None else node.max_items
    caps = [c.min if c.max is None else c.max for c in clauses]
    variants: dict[int, list[tuple[tuple[int, ...], ir.Expr]]] = {}

    def item_variants(position: int) -> list[tuple[tuple[int, ...], ir.Expr]]:
        position = min(position, last_position)
        if position not in variants:
            found = []
            for matched in product((False, True), repeat=len(clauses)):
                conj = node.item_schema(position).union(
                    *(c.schema if m else n for c, n, m in zip(clauses, negated, matched))
                )
                if not ctx.is_false(conj):
                    found.append((tuple(int(m) for m in matched), ctx.value_rule(conj, depth + 1)))
            variants[position] = found
        return variants[position]

    names: dict[tuple[int, tuple[int, ...]], str] = {}
    pending: list[tuple[int, tuple[int, ...]]] = []

    def state(count: int, matches: tuple[int, ...]) -> ir.Expr:
        key = (count, matches)
        if key not in names:
            if len(names) >= MAX_CONTAINS_STATES:
                raise ConstraintLimitError(
                    f"contains needs more than {MAX_CONTAINS_STATES} rules"
                    + (f" (at schema pointer {where.pointer!r})" if where else "")
                )
            names[key] = ctx.reserve(f"{hint}_contains")
            pending.append(key)
        return ir.Ref(names[key])

    def body(count: int, matches: tuple[int, ...]) -> ir.Expr:
        options = []
        if count >= node.min_items and all(m >= c.min for m, c in zip(matches, clauses)):
            options.append(layout.empty("[]") if count == 0 else layout.close("]", depth))
        if node.max_items is None or count < node.max_items:
            lead = layout.open("[", depth) if count == 0 else layout.comma(depth)
            for matched, item in item_variants(count):
                after = tuple(m + d for m, d in zip(matches, matched))
                if all(c.max is None or a <= c.max for a, c in zip(after, clauses)):
                    capped = tuple(min(a, cap) for a, cap in zip(after, caps))
                    options.append(ir.seq(lead, item, state(min(count + 1, cap_items), capped)))
        return ir.alt(*options)

    start = state(0, (0,) * len(clauses))
    while pending:
        key = pending.pop()
        ctx.set_rule(names[key], body(*key))
    return start
