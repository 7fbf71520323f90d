"""`ObjT` to grammar: declared order, optional keys, counts, dependencies, "some key must" clauses.

Emission walks the named keys in order with a small state: (next key, keys emitted so far (capped),
which dependency-relevant keys were emitted, which `Exists` clauses are satisfied). Each state is one
rule, so an optional key is a choice between emitting it and moving on, `dependentRequired` is
checked when a key is emitted or skipped, and `minProperties`/`maxProperties` count across named and
additional keys. After the named keys come additional keys: the key space minus every spelling of
the named keys, split into regions by the pattern/additional rules whose value schemas differ (exact
patternProperties overlap) and by the key sets of `Exists` clauses. A key an `Exists` clause looks
at is emitted in two variants: its value satisfying the clause (which sets the clause's bit) or not;
the object may close only when every bit is set.
"""

from __future__ import annotations

from itertools import combinations
from typing import Protocol

from grammars.core import byte_regex as rx
from grammars.core import ir
from grammars.errors import ConstraintLimitError
from grammars.frontends.json_schema.layout import Layout
from grammars.frontends.json_schema.nodes import TRUE, Conj, KeyRule, ObjT
from grammars.frontends.json_schema.refs import Loc
from grammars.frontends.json_schema.strings import (
    canonical_content,
    content_is_empty,
    is_spellable,
    other_than,
    quoted_term,
    string_lexeme,
)

#: Most key regions additional keys are split into (patterns overlapping in many ways).
MAX_KEY_REGIONS = 32
#: Most emission states (rules) one object alternative may need.
MAX_OBJECT_STATES = 20_000
#: Most `Exists` clauses one key may bear on (each doubles the key's variants).
MAX_CLAUSES_PER_KEY = 4

State = tuple[int, int, frozenset[str], int]  # (slot index, count, dependency keys emitted, clause bits)


class ObjectContext(Protocol):
    layout: Layout
    #: Set when an emitted object's further keys come from split regions, which may be finite.
    keys_may_run_out: bool

    def value_rule(self, conj: Conj, depth: int) -> ir.Expr: ...

    def is_false(self, conj: Conj) -> bool: ...

    def reserve(self, hint: str) -> str: ...

    def set_rule(self, name: str, expr: ir.Expr) -> None: ...


def emit_object(node: ObjT, depth: int, ctx: ObjectContext, hint: str, where: Loc | None) -> ir.Expr:
    """The grammar of one object alternative at nesting `depth`."""
    return _ObjectEmitter(node, depth, ctx, hint, where).start()


class _ObjectEmitter:
    def __init__(self, node: ObjT, depth: int, ctx: ObjectContext, hint: str, where: Loc | None) -> None:
        self.node, self.depth, self.ctx, self.hint, self.where = node, depth, ctx, hint, where
        layout = ctx.layout
        self.open, self.close, self.comma = layout.open("{", depth), layout.close("}", depth), layout.comma(depth)
        self.empty = layout.empty("{}")
        self.rules_by_name: dict[str, list[KeyRule]] = {}
        for rule in node.rules:
            if rule.name is not None:
                self.rules_by_name.setdefault(rule.name, []).append(rule)
        self.other_rules = [r for r in node.rules if r.name is None]
        self.all_bits = (1 << len(node.exists)) - 1
        self.slots = [(name, self._named_variants(name)) for name in node.names]
        self.index_of = {name: i for i, (name, _) in enumerate(self.slots)}
        self.deps: dict[str, set[str]] = {}
        for source, targets in node.dependent_required:
            self.deps.setdefault(source, set()).update(targets)
        self.relevant = frozenset(self.deps) | frozenset().union(*self.deps.values()) if self.deps else frozenset()
        self.cap = max(node.min_props, 1) if node.max_props is None else node.max_props
        self.additional = self._additional_pairs()  # bits -> pair expression
        self.states: dict[State, ir.Expr] = {}
        self.pending: list[tuple[str, State]] = []

    # -- pairs ----------------------------------------------------------------------------------
    def _pair(self, key: ir.Expr, value: Conj) -> ir.Expr:
        return ir.seq(key, self.ctx.layout.colon(), self.ctx.value_rule(value, self.depth + 1))

    def _variants(self, key: ir.Expr, value: Conj, clauses: list[int]) -> dict[int, ir.Expr]:
        """The pairs of one key: per set of clauses its value satisfies (the others it fails)."""
        if len(clauses) > MAX_CLAUSES_PER_KEY:
            raise ConstraintLimitError(f"a key bears on more than {MAX_CLAUSES_PER_KEY} not/oneOf clauses" + self._at())
        found: dict[int, list[ir.Expr]] = {}
        for size in range(len(clauses) + 1):
            for chosen in combinations(clauses, size):
                conj = value.union(
                    *(self.node.exists[j].rule.value for j in chosen),
                    *(self.node.exists[j].negated for j in clauses if j not in chosen),
                )
                if not self.ctx.is_false(conj):
                    bits = sum(1 << j for j in chosen)
                    found.setdefault(bits, []).append(self._pair(key, conj))
        return {bits: ir.alt(*pairs) for bits, pairs in found.items()}

    def _named_variants(self, name: str) -> dict[int, ir.Expr]:
        if not is_spellable(name):
            return {}  # no text writes this key: a required one leaves this object alternative empty
        content = canonical_content(name)
        value = frozenset().union(
            *(r.value for r in self.rules_by_name.get(name, ())),
            *(r.value for r in self.other_rules if r.applies_to(name, content)),
        )
        clauses = [j for j, e in enumerate(self.node.exists) if e.rule.applies_to(name, content)]
        key = ir.lex(quoted_term(content), repr(name))
        return self._variants(key, value, clauses)

    def _additional_pairs(self) -> dict[int, ir.Expr]:
        """Additional keys and their values by the clause bits they set: the key space outside the
        named keys, split into regions by the non-literal rules and the clauses' key sets (a region
        knows which patterns it is inside / outside, so most rules meet it without term algebra)."""
        names = frozenset(self.node.names)
        others = other_than(names)
        regions = [_Region(others, TRUE, frozenset(), frozenset(), frozenset())]
        splits: list[tuple[KeyRule, int | None]] = [(rule, None) for rule in self.other_rules if rule.value != TRUE]
        splits += [(clause.rule, j) for j, clause in enumerate(self.node.exists)]
        for rule, clause in splits:
            is_false = clause is None and self.ctx.is_false(rule.value)
            regions = [part for region in regions for part in region.split(rule, names, is_false, clause)]
            if len(regions) > MAX_KEY_REGIONS:
                raise ConstraintLimitError(
                    f"patternProperties overlap in more than {MAX_KEY_REGIONS} ways" + self._at()
                )
        found: dict[int, list[ir.Expr]] = {}
        for region in regions:
            if not self.ctx.is_false(region.value):
                if region.term != others:  # a part of the key space, which may be finite
                    self.ctx.keys_may_run_out = True
                for bits, pair in self._variants(
                    ir.lex(string_lexeme(region.term), "key"), region.value, sorted(region.clauses)
                ).items():
                    found.setdefault(bits, []).append(pair)
        return {bits: ir.alt(*pairs) for bits, pairs in found.items()}

    def _at(self) -> str:
        return f" (at schema pointer {self.where.pointer!r})" if self.where else ""

    # -- states ---------------------------------------------------------------------------------
    def start(self) -> ir.Expr:
        first = self._state((0, 0, frozenset(), 0))
        while self.pending:
            name, state = self.pending.pop()
            self.ctx.set_rule(name, self._body(*state))
        return first

    def _state(self, state: State) -> ir.Expr:
        ref = self.states.get(state)
        if ref is None:
            if len(self.states) >= MAX_OBJECT_STATES:
                raise ConstraintLimitError(
                    f"an object needs more than {MAX_OBJECT_STATES} emission states" + self._at()
                )
            name = self.ctx.reserve(f"{self.hint}_obj")
            ref = self.states[state] = ir.Ref(name)
            self.pending.append((name, state))
        return ref

    def _body(self, index: int, count: int, emitted: frozenset[str], bits: int) -> ir.Expr:
        if index == len(self.slots):
            return self._tail_with_clauses(count, bits) if self.node.exists else self._tail(count)
        name, variants = self.slots[index]
        options = []
        pending_target = any(name in self.deps.get(src, ()) for src in emitted)
        if name not in self.node.required and not pending_target:
            options.append(self._state((index + 1, count, emitted, bits)))
        earlier_targets_ok = all(t in emitted for t in self.deps.get(name, ()) if self.index_of[t] < index)
        under_max = self.node.max_props is None or count < self.node.max_props
        if earlier_targets_ok and under_max:
            lead = self.open if count == 0 else self.comma
            after = emitted | {name} if name in self.relevant else emitted
            for set_bits, pair in variants.items():
                options.append(
                    ir.seq(lead, pair, self._state((index + 1, min(count + 1, self.cap), after, bits | set_bits)))
                )
        return ir.alt(*options)

    def _tail(self, count: int) -> ir.Expr:
        """Additional keys as one counted repetition (no clauses to track)."""
        additional = self.additional.get(0, ir.NOTHING)
        lo = max(self.node.min_props - count, 0)
        hi = 0 if additional == ir.NOTHING else None if self.node.max_props is None else self.node.max_props - count
        if hi is not None and lo > hi:
            return ir.NOTHING
        if count > 0:
            return ir.seq(ir.repeat(ir.seq(self.comma, additional), lo, hi), self.close)
        options = [self.empty] if lo == 0 else []
        if hi is None or hi > 0:
            more = ir.repeat(ir.seq(self.comma, additional), max(lo - 1, 0), None if hi is None else hi - 1)
            options.append(ir.seq(self.open, additional, more, self.close))
        return ir.alt(*options)

    def _tail_with_clauses(self, count: int, bits: int) -> ir.Expr:
        """Additional keys one at a time, tracking which clauses they satisfy."""
        options = []
        if bits == self.all_bits and count >= self.node.min_props:
            options.append(self.empty if count == 0 else self.close)
        if self.node.max_props is None or count < self.node.max_props:
            lead = self.open if count == 0 else self.comma
            for set_bits, pair in self.additional.items():
                options.append(
                    ir.seq(
                        lead,
                        pair,
                        self._state((len(self.slots), min(count + 1, self.cap), frozenset(), bits | set_bits)),
                    )
                )
        return ir.alt(*options)


class _Region:
    """Additional keys in `term` (inside the patterns `inside`, outside those of `outside`), whose
    values must satisfy `value`, and which the `Exists` clauses numbered in `clauses` look at."""

    def __init__(
        self,
        term: rx.Term,
        value: Conj,
        inside: frozenset[rx.Term],
        outside: frozenset[rx.Term],
        clauses: frozenset[int],
    ) -> None:
        self.term, self.value, self.inside, self.outside, self.clauses = term, value, inside, outside, clauses

    def _within(self, rule: KeyRule, clause: int | None) -> _Region:
        if clause is not None:
            return _Region(self.term, self.value, self.inside, self.outside, self.clauses | {clause})
        return _Region(self.term, self.value | rule.value, self.inside, self.outside, self.clauses)

    def split(self, rule: KeyRule, names: frozenset[str], is_false: bool, clause: int | None) -> list[_Region]:
        """This region met with a rule (or the key set of clause number `clause`): the parts inside
        the rule's keys take its value schema (or the clause); a part inside a rule whose value is
        `false` is dropped; empty parts are dropped."""
        if rule.excluded is not None:
            if rule.excluded <= names and set(rule.excluded_patterns) <= self.outside:
                return [] if is_false else [self._within(rule, clause)]
            if set(rule.excluded_patterns) & self.inside:
                return [self]
        elif rule.keys in self.inside:
            return [] if is_false else [self._within(rule, clause)]
        elif rule.keys in self.outside:
            return [self]
        pattern = {rule.keys} if rule.excluded is None else set()
        outside = _Region(
            rx.difference(self.term, rule.keys), self.value, self.inside, self.outside | pattern, self.clauses
        )
        parts = [outside]
        if not is_false:
            inside = _Region(
                rx.intersect(self.term, rule.keys), self.value, self.inside | pattern, self.outside, self.clauses
            )
            parts.append(inside._within(rule, clause))
        return [p for p in parts if content_is_empty(p.term) is not True]
