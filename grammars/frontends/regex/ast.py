"""The character-level regex AST shared by the parser (`regex_syntax`) and the lowering (`regex_lowering`).

Nodes are frozen dataclasses, so front ends can build, compare and cache them. A pattern's meaning is
a language of strings; capturing is already gone at this level. What only `re`'s way of matching at a
position gives a meaning (lazy quantifiers, lookbehinds, word boundaries) stays in the tree for the
Lark front end (`grammars.frontends.lark.nodes`); `lowering` reads lazy as greedy and refuses the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from grammars.core.charset import ANY_CHAR, CharSet


@dataclass(frozen=True)
class CharClass:
    """One character from `chars`."""

    chars: CharSet


@dataclass(frozen=True)
class Concat:
    """The items in sequence (no items: the empty string)."""

    items: tuple[Node, ...]


@dataclass(frozen=True)
class Alternation:
    """Any one of the options."""

    options: tuple[Node, ...]


@dataclass(frozen=True)
class Repetition:
    """`item` between `min` and `max` times (`max=None`: unbounded); `is_lazy` for `*?`, `{m,n}?` etc."""

    item: Node
    min: int
    max: int | None
    is_lazy: bool = False


@dataclass(frozen=True)
class Group:
    """A parenthesized sub-pattern (capturing or not: the language is the same)."""

    item: Node


@dataclass(frozen=True)
class StartAnchor:
    """`^` or `\\A`; `offset` and `source` locate it for errors."""

    offset: int = field(default=0, compare=False)
    source: str = field(default="", compare=False, repr=False)


@dataclass(frozen=True)
class EndAnchor:
    """`$`, `\\Z` or `\\z`. Python's `$` also matches before a final newline (`allows_final_newline`),
    which only matters in `search_form`: under fullmatch it is at the end of the string anyway."""

    allows_final_newline: bool = False
    offset: int = field(default=0, compare=False)
    source: str = field(default="", compare=False, repr=False)


@dataclass(frozen=True)
class Lookahead:
    """`(?=body)` or `(?!body)`: the rest of the string must (not) match `item`, which is the written
    body followed by any text (unless the body ends in `$`).

    Lowered exactly, as an intersection with (the complement of) `item`, so it may not sit inside a
    repetition of more than a few iterations; `offset` and `source` locate it.
    """

    item: Node
    is_negative: bool
    offset: int = field(default=0, compare=False)
    source: str = field(default="", compare=False, repr=False)


@dataclass(frozen=True)
class Lookbehind:
    """`(?<=item)` or `(?<!item)`: the text before this point must (not) end with a match of `item`."""

    item: Node
    is_negative: bool
    offset: int = field(default=0, compare=False)
    source: str = field(default="", compare=False, repr=False)


@dataclass(frozen=True)
class WordBoundary:
    """`\\b` (or `\\B`, `is_negated`): a point with a character of `word` on exactly one side (`\\B`: on
    both or neither), the text's edges counting as non-word; `word` is what `\\w` means where written."""

    is_negated: bool
    word: CharSet
    offset: int = field(default=0, compare=False)
    source: str = field(default="", compare=False, repr=False)


Node = (
    CharClass
    | Concat
    | Alternation
    | Repetition
    | Group
    | StartAnchor
    | EndAnchor
    | Lookahead
    | Lookbehind
    | WordBoundary
)
#: The empty string.
EMPTY_STRING = Concat(())
#: Any string: what `search_form` puts where a pattern is not anchored.
ANY_STRING = Repetition(CharClass(ANY_CHAR), 0, None)
