"""`allOf`, `anyOf`, `oneOf`, `not` and `if`/`then`/`else` as exact operations on DNFs.

    allOf        pairwise intersection of alternatives (same type only; literals are filtered)
    anyOf        concatenation of the branches' alternatives
    oneOf        the union when the branches are provably disjoint, else the exact
                 B_i and not B_j (j != i) form where every needed complement exists
    not          the complement, per JSON type (see `complement`)
    if/then/else (if and then) or (not if and else)

What cannot be done exactly raises `NotExact`; the compiler turns it into an
`UnsupportedSchemaError` naming the keyword (or a warning under `lenient`).
"""

from __future__ import annotations

from typing import TypeVar

from grammars.core import byte_regex as rx
from grammars.frontends.json_schema import numbers
from grammars.frontends.json_schema.decide import MAX_PROOF_DEPTH, Context, SchemaCycle, node_is_empty, value_in_node
from grammars.frontends.json_schema.nodes import (
    DNF,
    TRUE,
    ArrT,
    BoolT,
    Conj,
    Contains,
    Exists,
    KeyRule,
    LitT,
    NullT,
    NumT,
    ObjT,
    StrT,
    Synth,
    Typed,
    forbid,
    json_type,
    node_type,
)
from grammars.frontends.json_schema.strings import ANY_CONTENT, content_is_empty, other_than, value_encodings

_V = TypeVar("_V")

#: Most pairs of oneOf branches not proved disjoint that the exact (complement) form is built for.
MAX_OVERLAPPING_PAIRS = 16


class NotExact(Exception):
    """A combination that has no exact grammar (the message says why)."""


# ----------------------------------------------------------------------------------------------
# Intersection
# ----------------------------------------------------------------------------------------------


def intersect_dnf(left: DNF, right: DNF, ctx: Context) -> DNF:
    """The alternatives of (left and right)."""
    if not left or not right:
        return ()
    result: list[Typed] = []
    kept: set[Typed] = set()  # `result` as a set: a list scan per product was quadratic in the alternatives
    # Complements multiply alternatives; many products are provably empty (a key both required and
    # forbidden), so drop those before they multiply further. The proof may normalize member
    # schemas one level down, but not from inside another such proof: nested objects would recurse.
    depth = MAX_PROOF_DEPTH + 1 if ctx.pruning else MAX_PROOF_DEPTH - 1
    ctx.pruning = True
    try:
        for a in left:
            for b in right:
                node = intersect_nodes(a, b, ctx)
                if node is None or node in kept:
                    continue
                if isinstance(node, (NullT, BoolT, LitT)) or node_is_empty(node, ctx, depth) is not True:
                    result.append(node)
                    kept.add(node)
    finally:
        ctx.pruning = depth == MAX_PROOF_DEPTH + 1
    ctx.check_alternatives(len(result))
    return tuple(result)


def intersect_nodes(a: Typed, b: Typed, ctx: Context) -> Typed | None:
    """a and b as one typed node, None when provably nothing (different types, no common value)."""
    if isinstance(a, LitT):
        return _kept_literals(a, b, ctx)
    if isinstance(b, LitT):
        return _kept_literals(b, a, ctx)
    if isinstance(a, NullT) and isinstance(b, NullT):
        return a
    if isinstance(a, BoolT) and isinstance(b, BoolT):
        values = a.values & b.values
        return BoolT(values) if values else None
    if isinstance(a, NumT) and isinstance(b, NumT):
        return _intersect_numbers(a, b)
    if isinstance(a, StrT) and isinstance(b, StrT):
        # Every content term is within ANY_CONTENT: leaving it out keeps the result a plain term
        # (no intersection), which the lexer derives far faster.
        terms = [t for t in (a.term, b.term) if t is not ANY_CONTENT]
        term = rx.intersect(*terms) if terms else ANY_CONTENT
        return StrT(term) if term is not rx.EMPTY else None
    if isinstance(a, ArrT) and isinstance(b, ArrT):
        return _intersect_arrays(a, b)
    if isinstance(a, ObjT) and isinstance(b, ObjT):
        return _intersect_objects(a, b)
    return None  # different JSON types


def _kept_literals(literals: LitT, other: Typed, ctx: Context) -> LitT | None:
    kept = tuple(v for v in literals.values if value_in_node(other, v.value, ctx))
    return LitT(kept) if kept else None


def _intersect_numbers(a: NumT, b: NumT) -> NumT | None:
    universe = numbers.PLAIN if numbers.PLAIN in (a.universe, b.universe) else numbers.FULL
    term = rx.intersect(a.term, b.term, universe) if universe is not numbers.FULL else rx.intersect(a.term, b.term)
    if term is rx.EMPTY:
        return None
    return NumT(term, universe, a.integer_text or b.integer_text)


def _intersect_arrays(a: ArrT, b: ArrT) -> ArrT | None:
    length = max(len(a.prefix), len(b.prefix))
    prefix = tuple(a.item_schema(i) | b.item_schema(i) for i in range(length))
    max_items = (
        a.max_items if b.max_items is None else b.max_items if a.max_items is None else min(a.max_items, b.max_items)
    )
    min_items = max(a.min_items, b.min_items)
    if max_items is not None and min_items > max_items:
        return None
    return ArrT(
        prefix,
        a.items | b.items,
        min_items,
        max_items,
        a.contains + b.contains,
        a.unique or b.unique,
        max(a.evaluated_prefix, b.evaluated_prefix),
        a.evaluates_all or b.evaluates_all,
    )


def _merged_names(a: ObjT, b: ObjT) -> tuple[str, ...]:
    """Key order of a and b together: the names they declare with a value schema (`properties`), a's
    before b's, then names only listed (`required`): a parent's `required: ["id"]` does not move
    `id` ahead of the properties its `anyOf` or `allOf` members declare."""
    order: dict[str, None] = {}
    for node in (a, b):
        declared = {rule.name for rule in node.rules}
        order.update(dict.fromkeys(name for name in node.names if name in declared))
    order.update(dict.fromkeys(a.names + b.names))
    return tuple(order)


def _intersect_objects(a: ObjT, b: ObjT) -> ObjT | None:
    max_props = (
        a.max_props if b.max_props is None else b.max_props if a.max_props is None else min(a.max_props, b.max_props)
    )
    min_props = max(a.min_props, b.min_props)
    required = a.required | b.required
    if max_props is not None and (min_props > max_props or len(required) > max_props):
        return None
    names = _merged_names(a, b)
    rules = a.rules + tuple(r for r in b.rules if r not in a.rules)
    deps = a.dependent_required + tuple(d for d in b.dependent_required if d not in a.dependent_required)
    patterns = a.evaluated_patterns + tuple(t for t in b.evaluated_patterns if t not in a.evaluated_patterns)
    exists = a.exists + tuple(e for e in b.exists if e not in a.exists)
    return ObjT(
        names,
        rules,
        required,
        min_props,
        max_props,
        deps,
        a.evaluated_names | b.evaluated_names,
        patterns,
        a.evaluates_all or b.evaluates_all,
        exists,
    )


def are_disjoint(left: DNF, right: DNF, ctx: Context) -> bool:
    """Whether no value satisfies both (proved; unknown counts as overlapping)."""
    for a in left:
        for b in right:
            node = intersect_nodes(a, b, ctx)
            if node is not None and node_is_empty(node, ctx) is not True:
                return False
    return True


# ----------------------------------------------------------------------------------------------
# oneOf, if/then/else
# ----------------------------------------------------------------------------------------------


def restrict_types(dnf: DNF, context: DNF) -> DNF:
    """The alternatives of `dnf` whose JSON type occurs in `context`: within `context`,
    not `dnf` = not (that), and its complement is built over fewer types."""
    kinds = {node_type(n) for n in context if not isinstance(n, LitT)}
    kinds |= {json_type(v.value) for n in context if isinstance(n, LitT) for v in n.values}
    kept: list[Typed] = []
    for node in dnf:
        if isinstance(node, LitT):
            values = tuple(v for v in node.values if json_type(v.value) in kinds)
            if values:
                kept.append(LitT(values))
        elif node_type(node) in kinds:
            kept.append(node)
    return tuple(kept)


def one_of(branches: list[DNF], context: DNF, ctx: Context) -> DNF:
    """Values of `context` for which exactly one branch holds.

    Raises:
        NotExact: overlapping branches whose complements cannot be built.
    """
    within = [intersect_dnf(context, branch, ctx) for branch in branches]
    overlapping = {
        i: [j for j in range(len(within)) if j != i and not are_disjoint(within[i], within[j], ctx)]
        for i in range(len(within))
    }
    num_overlaps = sum(map(len, overlapping.values())) // 2
    if num_overlaps > MAX_OVERLAPPING_PAIRS:
        raise NotExact(
            f"{num_overlaps} pairs of branches may overlap (exact oneOf is built for at most {MAX_OVERLAPPING_PAIRS})"
        )
    result: list[Typed] = []
    for i, alts in enumerate(within):
        for j in overlapping[i]:
            alts = intersect_dnf(alts, complement(restrict_types(branches[j], context), ctx), ctx)
        result.extend(a for a in alts if a not in result)
    ctx.check_alternatives(len(result))
    return tuple(result)


def if_then_else(condition: DNF, then: DNF, otherwise: DNF, context: DNF, ctx: Context) -> DNF:
    """Values of `context` satisfying (condition and then) or (not condition and otherwise).

    Raises:
        NotExact: the condition has no exact complement.
    """
    positive = intersect_dnf(intersect_dnf(context, condition, ctx), then, ctx)
    negative = intersect_dnf(
        intersect_dnf(context, complement(restrict_types(condition, context), ctx), ctx), otherwise, ctx
    )
    return positive + tuple(a for a in negative if a not in positive)


def negation(dnf: DNF, context: DNF, ctx: Context) -> DNF:
    """Values of `context` that are not in `dnf`.

    Raises:
        NotExact: no exact complement.
    """
    return intersect_dnf(context, complement(restrict_types(dnf, context), ctx), ctx)


# ----------------------------------------------------------------------------------------------
# Complement
# ----------------------------------------------------------------------------------------------


def complement(dnf: DNF, ctx: Context, depth: int = 0) -> DNF:
    """Every JSON value not in `dnf`, as a DNF.

    Raises:
        NotExact: arrays or objects whose complement is not expressible (uniqueness, additional or
            pattern properties, literal arrays/objects), or nesting deeper than MAX_PROOF_DEPTH.
    """
    if depth > MAX_PROOF_DEPTH:
        raise NotExact("the complement nests too deep")
    by_type: dict[str, list[Typed]] = {}
    for node in dnf:
        if isinstance(node, LitT):
            for value in node.values:
                by_type.setdefault(json_type(value.value), []).append(LitT((value,)))
        else:
            by_type.setdefault(node_type(node), []).append(node)
    result: list[Typed] = []
    if "null" not in by_type:
        result.append(NullT())
    result.extend(_complement_booleans(by_type.get("boolean", [])))
    result.extend(_complement_numbers(by_type.get("number", [])))
    result.extend(_complement_strings(by_type.get("string", [])))
    result.extend(_complement_containers(by_type.get("array", []), ArrT(), _complement_array, ctx, depth))
    result.extend(_complement_containers(by_type.get("object", []), ObjT(), _complement_object, ctx, depth))
    ctx.check_alternatives(len(result))
    return tuple(result)


def _complement_booleans(nodes: list[Typed]) -> list[Typed]:
    covered: set[bool] = set()
    for node in nodes:
        covered |= node.values if isinstance(node, BoolT) else set(_values_of(node, bool))
    rest = frozenset({True, False} - covered)
    return [BoolT(rest)] if rest else []


def _complement_numbers(nodes: list[Typed]) -> list[Typed]:
    if not nodes:
        return [NumT()]
    universe = numbers.FULL
    covered: list[rx.Term] = []
    for node in nodes:
        if isinstance(node, NumT):
            covered.append(node.term)
            if node.universe is numbers.PLAIN:
                universe = numbers.PLAIN
        elif isinstance(node, LitT):
            covered += [numbers.value_texts(numbers.to_fraction(v.value)) for v in node.values]
            universe = numbers.PLAIN
    rest = rx.difference(universe, rx.alt(*covered))
    return [NumT(rest, universe)] if rx.is_empty(rest) is not True else []


def _complement_strings(nodes: list[Typed]) -> list[Typed]:
    if nodes and all(isinstance(n, LitT) for n in nodes):
        return [StrT(other_than(frozenset(text for n in nodes for text in _values_of(n, str))))]
    covered = []
    for node in nodes:
        if isinstance(node, StrT):
            covered.append(node.term)
        for text in _values_of(node, str):
            try:
                covered.append(value_encodings(text))
            except ValueError:
                continue  # a lone-surrogate string is never generated, so excluding it changes nothing
    rest = rx.difference(ANY_CONTENT, rx.alt(*covered))
    return [StrT(rest)] if content_is_empty(rest) is not True else []


def _values_of(node: Typed, kind: type[_V]) -> list[_V]:
    """The values of a literal node that are `kind` (a bucket of `complement` holds one JSON type);
    none for other nodes."""
    return [v.value for v in node.values if isinstance(v.value, kind)] if isinstance(node, LitT) else []


def _complement_containers(nodes: list[Typed], top: Typed, one, ctx: Context, depth: int) -> list[Typed]:
    if not nodes:
        return [top]
    if any(isinstance(n, LitT) for n in nodes):
        raise NotExact(f"the complement of literal {node_type(top)}s is not supported")
    if top in nodes:
        return []
    result: tuple[Typed, ...] = (top,)
    for node in nodes:
        result = intersect_dnf(result, tuple(one(node, ctx, depth)), ctx)
    return list(result)


def _negated(conj: Conj, ctx: Context, depth: int) -> Conj:
    try:
        dnf = ctx.normalize(conj)
    except SchemaCycle as exc:
        raise NotExact("the complement of a schema that refers back to itself is not supported") from exc
    return frozenset({Synth(complement(dnf, ctx, depth + 1))})


def _complement_array(node: ArrT, ctx: Context, depth: int) -> list[Typed]:
    if node.unique:
        raise NotExact("the complement of uniqueItems is not supported")
    parts: list[Typed] = []
    if node.min_items > 0:
        parts.append(ArrT(max_items=node.min_items - 1))
    if node.max_items is not None:
        parts.append(ArrT(min_items=node.max_items + 1))
    for index, schema in enumerate(node.prefix):
        if schema != TRUE:
            prefix = (TRUE,) * index + (_negated(schema, ctx, depth),)
            parts.append(ArrT(prefix=prefix, min_items=index + 1))
    if node.items != TRUE:
        if node.prefix:
            raise NotExact("the complement of items after prefixItems is not supported")
        parts.append(ArrT(contains=(Contains(_negated(node.items, ctx, depth), 1, None),)))
    for clause in node.contains:
        if clause.min > 0:
            parts.append(ArrT(contains=(Contains(clause.schema, 0, clause.min - 1),)))
        if clause.max is not None:
            parts.append(ArrT(contains=(Contains(clause.schema, clause.max + 1, None),)))
    return parts


def _complement_object(node: ObjT, ctx: Context, depth: int) -> list[Typed]:
    parts: list[Typed] = []
    for clause in node.exists:  # not (some key in K satisfies V) = every key in K fails V
        rule = clause.rule
        parts.append(ObjT(rules=(KeyRule(rule.keys, clause.negated, None, rule.excluded, rule.excluded_patterns),)))
    if node.min_props > 0:
        parts.append(ObjT(max_props=node.min_props - 1))
    if node.max_props is not None:
        parts.append(ObjT(min_props=node.max_props + 1))
    for name in sorted(node.required):
        parts.append(forbid(name))
    for rule in node.rules:
        if rule.value == TRUE:
            continue
        if rule.name is None:  # not (every key in K satisfies V) = some key in K does not
            failing = KeyRule(rule.keys, _negated(rule.value, ctx, depth), None, rule.excluded, rule.excluded_patterns)
            parts.append(ObjT(exists=(Exists(failing, rule.value),)))
            continue
        negated = KeyRule(rule.keys, _negated(rule.value, ctx, depth), rule.name)
        parts.append(ObjT(names=(rule.name,), rules=(negated,), required=frozenset({rule.name})))
    for source, targets in node.dependent_required:
        for target in targets:
            parts.append(ObjT(names=(source, target), rules=forbid(target).rules, required=frozenset({source})))
    return parts
