"""The grammar IR every front end (Lark, regex, JSON Schema, Python types, choices) compiles to.

A `Grammar` is a set of named rules whose right-hand sides are EBNF expressions over lexemes.
A lexeme is a byte-level regex term (`grammars.core.byte_regex`): the lexer matches lexemes greedily
(longest match, one byte of lookahead), the parser sequences them. Front ends choose the lexeme
granularity: the coarser the lexemes (a whole JSON string, a number), the fewer parser steps a
token costs.

Build expressions with the constructors below; they normalize (flatten, drop empties) so front ends
can compose freely.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

from grammars.core import byte_regex as rx


@dataclass(frozen=True)
class Lexeme:
    """One token of the lexer: a byte-regex term. `name` is for messages only."""

    term: rx.Term
    name: str = ""


@dataclass(frozen=True)
class Ref:
    """A reference to the rule `name` (recursion goes through these)."""

    name: str


@dataclass(frozen=True)
class Seq:
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Alt:
    options: tuple[Expr, ...]


@dataclass(frozen=True)
class Repeat:
    """`item` between `min` and `max` times (`max=None`: unbounded). Large bounds stay counters."""

    item: Expr
    min: int
    max: int | None


Expr = Lexeme | Ref | Seq | Alt | Repeat

#: The empty string.
EMPTY: Expr = Seq(())
#: No string at all.
NOTHING: Expr = Alt(())


@dataclass
class Grammar:
    """Rules over lexemes, with the start rule and the lexemes allowed between any two (`%ignore`).

    `distinct_keys_after`: None, or a byte term marking where JSON text begins whose objects never
    repeat a key (a condition no context-free rule states; `grammars.core.distinct_keys` enforces
    it beside the automaton): the text after the shortest prefix of the output in the term, and so
    never, when no prefix is in it (`rx.EPSILON`: the whole output is such JSON). Composed grammars
    (`grammars.compose`, tool calls) derive it from the JSON grammars they embed.

    `keys_may_run_out`: whether such an object may reach a comma after which every key the grammar
    allows is one the object already has (finite key patterns, `propertyNames`, key clauses), so
    that masks must refuse that comma. False only where the producer proves otherwise: every object
    writes its named keys once each, in order, and further keys from an infinite set (the JSON
    Schema front end, where no object splits its additional keys).
    """

    rules: dict[str, Expr]
    start: str
    ignore: tuple[rx.Term, ...] = field(default_factory=tuple)
    distinct_keys_after: rx.Term | None = None
    keys_may_run_out: bool = True

    def size(self) -> int:
        """Number of expression nodes, the measure compile limits are stated in."""
        return sum(expr_size(e) for e in self.rules.values())


def expr_size(expr: Expr) -> int:
    size = 0
    todo = [expr]
    while todo:
        node = todo.pop()
        size += 1
        kind = type(node)
        if kind is Seq:
            todo += node.items  # type: ignore[union-attr]
        elif kind is Alt:
            todo += node.options  # type: ignore[union-attr]
        elif kind is Repeat:
            todo.append(node.item)  # type: ignore[union-attr]
    return size


# ----------------------------------------------------------------------------------------------
# Normalizing constructors
# ----------------------------------------------------------------------------------------------


def lex(term: rx.Term, name: str = "") -> Expr:
    """A lexeme for `term`; the empty-language term gives NOTHING, the empty string EMPTY."""
    if term is rx.EMPTY:
        return NOTHING
    if term is rx.EPSILON:
        return EMPTY
    return Lexeme(term, name)


def lit(text: str | bytes) -> Expr:
    """A lexeme matching exactly `text` (UTF-8 encoded when a str)."""
    return _literal(text.encode("utf-8") if isinstance(text, str) else text)


@functools.lru_cache(maxsize=1024)
def _literal(data: bytes) -> Expr:
    # Cached: punctuation and keywords recur in every grammar. A term kept past a new generation of
    # the byte-regex tables stays valid (see `grammars.core.byte_regex`), as front-end constants do.
    return lex(rx.literal(data), repr(data.decode("utf-8", "replace")))


def ref(name: str) -> Expr:
    return Ref(name)


def seq(*items: Expr) -> Expr:
    flat: list[Expr] = []
    for item in items:
        kind = type(item)  # exact types, not `== NOTHING`: dataclass equality costs a call per item
        if kind is Seq:
            flat += item.items  # type: ignore[union-attr]
        elif kind is Alt and not item.options:  # type: ignore[union-attr]
            return NOTHING
        else:
            flat.append(item)
    return flat[0] if len(flat) == 1 else Seq(tuple(flat))


def alt(*options: Expr) -> Expr:
    # A dict keeps the first of equal options in order, in linear time (grammars have 5,000-way choices).
    flat = list(
        dict.fromkeys(o for option in options for o in (option.options if isinstance(option, Alt) else (option,)))
    )
    return flat[0] if len(flat) == 1 else Alt(tuple(flat))


def repeat(item: Expr, min: int, max: int | None) -> Expr:
    if max is not None and max < min:
        return NOTHING
    kind = type(item)
    if max == 0 or (kind is Seq and not item.items):  # type: ignore[union-attr]
        return EMPTY
    if kind is Alt and not item.options:  # type: ignore[union-attr]
        return EMPTY if min == 0 else NOTHING
    if min == max == 1:
        return item
    return Repeat(item, min, max)


def opt(item: Expr) -> Expr:
    return repeat(item, 0, 1)


def star(item: Expr) -> Expr:
    return repeat(item, 0, None)


def plus(item: Expr) -> Expr:
    return repeat(item, 1, None)


def separated(item: Expr, separator: Expr, min_items: int = 0, max_items: int | None = None) -> Expr:
    """`item (separator item)*` with between `min_items` and `max_items` items: JSON arrays, CSV rows,
    argument lists."""
    if max_items is not None and (max_items < min_items or max_items == 0):
        return EMPTY if max_items == 0 and min_items == 0 else NOTHING
    rest = repeat(seq(separator, item), max(min_items - 1, 0), None if max_items is None else max_items - 1)
    some = seq(item, rest)
    return some if min_items > 0 else opt(some)


#: What a rule name may not hold (`\W`: neither `str.isalnum` nor "_").
_NOT_NAME_CHAR = re.compile(r"\W")


class RuleSet:
    """Allocates rule names for a front end and collects the rules it defines.

    Front ends call `define(hint, expr)` for each sub-grammar worth naming (a schema, a $ref target,
    a Lark rule) and use the returned `Ref`; `reserve` + `set` build recursive rules.
    """

    def __init__(self) -> None:
        self.rules: dict[str, Expr] = {}
        self._counts: dict[str, int] = {}

    def reserve(self, hint: str) -> str:
        """A fresh rule name based on `hint`, to be given a body later with `set`."""
        base = _NOT_NAME_CHAR.sub("_", hint) or "rule"
        n = self._counts.get(base, 0)
        name = base if n == 0 else f"{base}__{n}"
        while name in self.rules:  # a rule named like a numbered one (`x__1`) already exists
            n += 1
            name = f"{base}__{n}"
        self._counts[base] = n + 1
        self.rules[name] = NOTHING
        return name

    def set(self, name: str, expr: Expr) -> None:
        self.rules[name] = expr

    def define(self, hint: str, expr: Expr) -> Expr:
        name = self.reserve(hint)
        self.rules[name] = expr
        return Ref(name)

    def grammar(self, start: Expr, ignore: tuple[rx.Term, ...] = ()) -> Grammar:
        """The grammar whose start rule is `start` (a Ref, or any expression: it then gets a rule)."""
        name = start.name if isinstance(start, Ref) else self.define("start", start).name  # type: ignore[union-attr]
        return Grammar(dict(self.rules), name, ignore)
