"""The normal form a schema compiles through: a union of typed alternatives over lazily named children.

Every schema normalizes to a *DNF*: a tuple of typed alternatives, each the constraints one JSON type
must meet (`NullT`, `BoolT`, `NumT`, `StrT`, `ArrT`, `ObjT`) or a finite set of values (`LitT`, from
`enum`/`const`). The empty tuple is the schema `false`. Scalars are byte terms (see `numbers` and
`strings`), so their intersection, union and complement are exact; arrays and objects refer to their
members' schemas through a `Conj`: a frozenset of `Part`s (schema locations, or computed `Synth`
DNFs) whose conjunction the member must satisfy. A `Conj` is normalized on demand and becomes one
grammar rule, so `allOf` merges children by set union and recursive schemas stay finite.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from grammars.core import byte_regex as rx
from grammars.frontends.json_schema import numbers
from grammars.frontends.json_schema.refs import Loc
from grammars.frontends.json_schema.strings import ANY_CONTENT, value_encodings


@dataclass(frozen=True)
class Synth:
    """A computed schema: a DNF that is no location of the document (a complement, a split)."""

    alts: tuple[Typed, ...]


Part = Loc | Synth
Conj = frozenset[Part]  # the conjunction of its parts; empty = any value
TRUE: Conj = frozenset()
FALSE: Conj = frozenset({Synth(())})


@dataclass(frozen=True)
class NullT:
    """`null`."""


@dataclass(frozen=True)
class BoolT:
    """`true` and/or `false`."""

    values: frozenset[bool] = frozenset({True, False})


@dataclass(frozen=True)
class NumT:
    """Numbers whose text is in `term`, value-closed within `universe` (see `numbers`).

    `integer_text`: the schema said `type: integer`, so the text emitted is a canonical integer.
    """

    term: rx.Term = numbers.FULL
    universe: rx.Term = numbers.FULL
    integer_text: bool = False


@dataclass(frozen=True)
class StrT:
    """Strings whose content (between the quotes) is in `term`, a value-closed term."""

    term: rx.Term = ANY_CONTENT


@dataclass(frozen=True)
class KeyRule:
    """Every key in `keys` (a value-closed content term) must have a value satisfying `value`.

    `name` is set when the rule is for one declared property name. `excluded` is set when the rule
    is for every key but those names and those matching `excluded_patterns` (`additionalProperties`),
    which lets the emitter decide how it meets a key region without term algebra.
    """

    keys: rx.Term
    value: Conj
    name: str | None = None
    excluded: frozenset[str] | None = None
    excluded_patterns: tuple[rx.Term, ...] = ()

    def applies_to(self, key: str, content: bytes) -> bool:
        """Whether the rule constrains `key` (its canonical content bytes given)."""
        if self.name is not None:
            return key == self.name
        if self.excluded is not None:
            return key not in self.excluded and not any(rx.matches(p, content) for p in self.excluded_patterns)
        return rx.matches(self.keys, content)


@dataclass(frozen=True)
class Exists:
    """Some key that `rule` looks at has a value satisfying `rule.value` (`negated`: the values that
    do not). Complements of key rules are these: not (every "x-" key is a string) = some "x-" key
    is not a string."""

    rule: KeyRule
    negated: Conj


@dataclass(frozen=True)
class ObjT:
    """Objects: key rules, named keys in emission order, counts and dependencies.

    The keys some keyword of this alternative evaluated (what `unevaluatedProperties` excludes) are
    `evaluated_names`, keys matching a term of `evaluated_patterns`, or all when `evaluates_all`.
    Every `exists` clause must hold too.
    """

    names: tuple[str, ...] = ()
    rules: tuple[KeyRule, ...] = ()
    required: frozenset[str] = frozenset()
    min_props: int = 0
    max_props: int | None = None
    dependent_required: tuple[tuple[str, tuple[str, ...]], ...] = ()
    evaluated_names: frozenset[str] = frozenset()
    evaluated_patterns: tuple[rx.Term, ...] = ()
    evaluates_all: bool = False
    exists: tuple[Exists, ...] = ()


@dataclass(frozen=True)
class Contains:
    """Between `min` and `max` items satisfy `schema`."""

    schema: Conj
    min: int = 1
    max: int | None = None


@dataclass(frozen=True)
class ArrT:
    """Arrays: positional `prefix` schemas, then `items`; counts, `contains`, uniqueness.

    `evaluated_prefix`/`evaluates_all` record what `unevaluatedItems` would exclude.
    """

    prefix: tuple[Conj, ...] = ()
    items: Conj = TRUE
    min_items: int = 0
    max_items: int | None = None
    contains: tuple[Contains, ...] = ()
    unique: bool = False
    evaluated_prefix: int = 0
    evaluates_all: bool = False

    def item_schema(self, index: int) -> Conj:
        """The schema of the item at `index`."""
        return self.prefix[index] if index < len(self.prefix) else self.items


@dataclass(frozen=True)
class Value:
    """One JSON value of an `enum`/`const`, compared by JSON Schema equality (`key`)."""

    key: str
    value: object = field(compare=False, hash=False)


@dataclass(frozen=True)
class LitT:
    """A finite set of values (from `enum` / `const`), kept in schema order."""

    values: tuple[Value, ...]


Typed = NullT | BoolT | NumT | StrT | ArrT | ObjT | LitT
DNF = tuple[Typed, ...]

TOP: DNF = (NullT(), BoolT(), NumT(), StrT(), ArrT(), ObjT())

JSON_TYPES = ("null", "boolean", "number", "string", "array", "object")
_TYPE_OF_NODE = {NullT: "null", BoolT: "boolean", NumT: "number", StrT: "string", ArrT: "array", ObjT: "object"}


def node_type(node: Typed) -> str:
    """The JSON type of a typed node ("literal" for `LitT`)."""
    return _TYPE_OF_NODE.get(type(node), "literal")


def json_type(value: object) -> str:
    """The JSON type of a Python JSON value.

    Raises:
        TypeError: not a JSON value.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def value_key(value: object) -> str:
    """A canonical text for JSON Schema equality: 1 == 1.0, key order ignored, true != 1.

    Raises:
        TypeError: not a JSON value; ValueError: a non-finite number.
    """
    return json.dumps(_canonical(value), sort_keys=True, ensure_ascii=True, separators=(",", ":"))


def _canonical(value: object) -> object:
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if json_type(value) == "number":
        return {"#n": numbers.plain_text(numbers.to_fraction(value))}
    return value


def make_value(value: object) -> Value:
    """A `Value` for an enum/const member."""
    return Value(value_key(value), value)


def require(name: str) -> ObjT:
    """Objects that have key `name`."""
    return ObjT(names=(name,), required=frozenset({name}))


def forbid(name: str) -> ObjT:
    """Objects without key `name`."""
    return ObjT(names=(name,), rules=(KeyRule(value_encodings(name), FALSE, name),))
