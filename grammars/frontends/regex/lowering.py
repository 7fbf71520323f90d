"""Character-level regex AST -> byte-level term, under fullmatch or search ("matches anywhere") semantics.

Lowering runs in two steps. `_normalize` resolves what only makes sense at the character level:
anchors (a constraint matches whole strings, so `^` / `$` are no-ops where they can only be reached
at the start / end of the string, and refused elsewhere: `a^b`), lookbehinds and word boundaries
(refused: only the Lark front end gives them a meaning), lazy quantifiers (read as greedy: the same
language), groups (dropped), nested counted repetitions (merged when exact), and nested
concatenations (flattened, which also keeps `byte_regex.concat` from recursing over long literals).
`_Lowering` then maps the anchor-free AST onto `byte_regex` constructors, encoding each character
class with the caller's encoder: UTF-8 for raw text, JSON-string escapes for the JSON Schema front end.

Counted repetition stays a counter (`byte_regex.repeat`), never unrolled.
"""

from __future__ import annotations

from collections.abc import Callable

from grammars.core import byte_regex as rx
from grammars.core.charset import CharSet
from grammars.errors import GrammarSyntaxError
from grammars.frontends.regex.ast import (
    ANY_STRING,
    EMPTY_STRING,
    Alternation,
    CharClass,
    Concat,
    EndAnchor,
    Group,
    Lookahead,
    Lookbehind,
    Node,
    Repetition,
    StartAnchor,
    WordBoundary,
)

#: A lookahead inside a repetition is lowered by unrolling it, up to this many iterations.
MAX_LOOKAHEAD_REPETITIONS = 8


def _is_zero_width(node: Node) -> bool:
    """Whether `node` can only match the empty string (anchors, lookarounds, empty groups)."""
    if isinstance(node, (StartAnchor, EndAnchor, Lookahead, Lookbehind, WordBoundary)):
        return True
    if isinstance(node, CharClass):
        return False
    if isinstance(node, Concat):
        return all(map(_is_zero_width, node.items))
    if isinstance(node, Alternation):
        return all(map(_is_zero_width, node.options))
    if isinstance(node, Repetition):
        return node.max == 0 or _is_zero_width(node.item)
    return _is_zero_width(node.item)


def _has_anchor(node: Node, kind: type) -> bool:
    if isinstance(node, kind):
        return True
    if isinstance(node, Concat):
        return any(_has_anchor(item, kind) for item in node.items)
    if isinstance(node, Alternation):
        return any(_has_anchor(option, kind) for option in node.options)
    if isinstance(node, (Repetition, Group)):
        return _has_anchor(node.item, kind)
    return False


def _has_lookahead(node: Node) -> bool:
    if isinstance(node, Lookahead):
        return True
    if isinstance(node, Concat):
        return any(map(_has_lookahead, node.items))
    if isinstance(node, Alternation):
        return any(map(_has_lookahead, node.options))
    if isinstance(node, (Repetition, Group)):
        return _has_lookahead(node.item)
    return False


def _flat_items(node: Concat) -> list[Node]:
    """The items of nested Concat / Group(Concat) chains, spliced into one list."""
    items: list[Node] = []
    for item in node.items:
        while isinstance(item, Group):
            item = item.item
        items.extend(_flat_items(item) if isinstance(item, Concat) else [item])
    return items


def _merge_nested_repetition(node: Repetition) -> Repetition:
    """`(X{m1,n1}){m2,n2}` as `X{m1*m2, n1*n2}` when every count in between is reachable.

    Nested counters over the same item make derivatives track every (inner, outer) count pair:
    `(a{1,100}){1,100}` reaches states of ~10,000 alternatives. Repeating k times gives X^c for c in
    [k*m1, k*n1]; when those intervals touch for consecutive k, their union is one interval.
    """
    inner = node.item
    while isinstance(inner, Group):
        inner = inner.item
    if not isinstance(inner, Repetition):
        return node
    inner = _merge_nested_repetition(inner)
    m1, n1, m2, n2 = inner.min, inner.max, node.min, node.max
    # Consecutive k, k+1 (k >= max(m2, 1)) touch iff (k+1)*m1 <= k*n1 + 1; k = 0 contributes {0}.
    first_k = max(m2, 1)
    touches = n1 is None or n2 == first_k or first_k * (n1 - m1) >= m1 - 1
    if not touches or (m2 == 0 and m1 > 1):
        return node
    if n1 == 0 or n2 == 0:
        new_max: int | None = 0
    else:
        new_max = None if n1 is None or n2 is None else n1 * n2
    return Repetition(inner.item, m1 * m2, new_max)


def _anchor_error(node: StartAnchor | EndAnchor) -> GrammarSyntaxError:
    if isinstance(node, StartAnchor):
        return GrammarSyntaxError(
            "^ / \\A that is not at the start of the pattern is not supported", node.source, node.offset
        )
    return GrammarSyntaxError(
        "$ / \\Z that is not at the end of the pattern is not supported", node.source, node.offset
    )


def _normalize(node: Node, at_start: bool, at_end: bool) -> Node:
    """An equivalent AST without anchors, groups or laziness, with flat concatenations and merged counters.

    `at_start` / `at_end`: whether `node` can only be reached at the start / end of the string.

    Raises:
        GrammarSyntaxError: an anchor that is not at the start / end, a lookbehind, a word boundary.
    """
    if isinstance(node, CharClass):
        return node
    if isinstance(node, Concat):
        items = _flat_items(node)
        consuming = [i for i, item in enumerate(items) if type(item) is CharClass or not _is_zero_width(item)]
        # Items up to the first consuming one sit at the start; from the last one on, at the end.
        first, last = (consuming[0], consuming[-1]) if consuming else (len(items), 0)
        normalized = (_normalize(item, at_start and i <= first, at_end and i >= last) for i, item in enumerate(items))
        return Concat(tuple(item for item in normalized if item != EMPTY_STRING))
    if isinstance(node, Alternation):
        return Alternation(tuple(_normalize(option, at_start, at_end) for option in node.options))
    if isinstance(node, Repetition):
        node = _merge_nested_repetition(node)
        is_once = (node.max is not None and node.max <= 1) or _is_zero_width(node.item)
        return Repetition(_normalize(node.item, at_start and is_once, at_end and is_once), node.min, node.max)
    if isinstance(node, Group):
        return _normalize(node.item, at_start, at_end)
    if isinstance(node, Lookahead):
        return Lookahead(_normalize(node.item, at_start, True), node.is_negative, node.offset, node.source)
    if isinstance(node, Lookbehind):
        raise GrammarSyntaxError("lookbehind assertions are not supported", node.source, node.offset)
    if isinstance(node, WordBoundary):
        letter = "B" if node.is_negated else "b"
        raise GrammarSyntaxError(f"word boundaries (\\{letter}) are not supported", node.source, node.offset)
    if not (at_start if isinstance(node, StartAnchor) else at_end):
        raise _anchor_error(node)
    return EMPTY_STRING


class _Lowering:
    """Maps a normalized AST onto byte_regex terms, encoding each character set once."""

    def __init__(self, encode: Callable[[CharSet], rx.Term]) -> None:
        self.encode = encode
        self.encoded: dict[int, rx.Term] = {}  # by id(CharSet): the AST keeps the sets alive

    def term(self, node: Node) -> rx.Term:
        if isinstance(node, CharClass):
            term = self.encoded.get(id(node.chars))
            if term is None:
                term = self.encoded[id(node.chars)] = self.encode(node.chars)
            return term
        if isinstance(node, Concat):
            return rx.concat(*map(self.term, node.items))
        if isinstance(node, Alternation):
            return rx.alt(*map(self.term, node.options))
        if isinstance(node, Repetition):
            return rx.repeat(self.term(node.item), node.min, node.max)
        raise TypeError(f"not a normalized regex node: {node!r}")  # a programming error, not user input

    def term_then(self, node: Node, rest: rx.Term) -> rx.Term:
        """The term of `node` followed by `rest`: a lookahead constrains everything after it, so it
        is lowered with its continuation (`(?=b)c` then `r` is `(c r) & (b .*)`)."""
        if not _has_lookahead(node):
            return rx.concat(self.term(node), rest)
        if isinstance(node, Lookahead):
            body = self.term_then(node.item, rx.EPSILON)
            return rx.difference(rest, body) if node.is_negative else rx.intersect(rest, body)
        if isinstance(node, Concat):
            for item in reversed(node.items):
                rest = self.term_then(item, rest)
            return rest
        if isinstance(node, Alternation):
            return rx.alt(*(self.term_then(option, rest) for option in node.options))
        if isinstance(node, Repetition) and node.max is not None and node.max <= MAX_LOOKAHEAD_REPETITIONS:
            return rx.alt(
                *(self.term_then(Concat((node.item,) * count), rest) for count in range(node.min, node.max + 1))
            )
        lookahead = _first_lookahead(node)
        raise GrammarSyntaxError(
            f"a lookahead inside a repetition of more than {MAX_LOOKAHEAD_REPETITIONS} iterations is not supported",
            lookahead.source,
            lookahead.offset,
        )


def _first_lookahead(node: Node) -> Lookahead:
    """The first lookahead in `node`, which `_has_lookahead` says has one."""
    if isinstance(node, Lookahead):
        return node
    children: tuple[Node, ...] = ()
    if isinstance(node, Concat):
        children = node.items
    elif isinstance(node, Alternation):
        children = node.options
    elif isinstance(node, (Repetition, Group)):
        children = (node.item,)
    return next(_first_lookahead(child) for child in children if _has_lookahead(child))


def lower(node: Node, encode: Callable[[CharSet], rx.Term]) -> rx.Term:
    """The byte-level term of an AST under fullmatch semantics.

    Args:
        node: from `regex_syntax.parse_regex` (or `search_form`).
        encode: the byte encoding of one character of a set: `charset.utf8_term` for raw text; the
            JSON Schema front end passes one that yields JSON-string-escaped forms.

    Raises:
        GrammarSyntaxError: an anchor where fullmatch does not make it a no-op (`a^b`, `(a$)+b`), a
            lookbehind or a word boundary, located in the pattern it came from.
    """
    return _Lowering(encode).term_then(_normalize(node, True, True), rx.EPSILON)


def open_end(node: Node, at_front: bool) -> Node:
    """`node` with any string allowed on one side (front: Σ* node; back: node Σ*), except on paths an
    anchor pins to that side: the pinning anchor is removed instead (Python's `$` becomes an optional
    final newline, as `re.search` allows). Anchors that remain are sorted out by `_normalize`."""
    kind = StartAnchor if at_front else EndAnchor
    if not _has_anchor(node, kind):
        return Concat((ANY_STRING, node) if at_front else (node, ANY_STRING))
    if isinstance(node, StartAnchor):
        return EMPTY_STRING
    if isinstance(node, EndAnchor):
        return Repetition(CharClass(CharSet.of("\n")), 0, 1) if node.allows_final_newline else EMPTY_STRING
    if isinstance(node, Group):
        return open_end(node.item, at_front)
    if isinstance(node, Alternation):
        return Alternation(tuple(open_end(option, at_front) for option in node.options))
    if isinstance(node, Concat):
        items = list(node.items) if at_front else list(reversed(node.items))
        index = next(i for i, item in enumerate(items) if _has_anchor(item, kind) or not _is_zero_width(item))
        items[index] = open_end(items[index], at_front)
        return Concat(tuple(items if at_front else reversed(items)))
    if isinstance(node, Repetition) and ((node.max is not None and node.max <= 1) or _is_zero_width(node.item)):
        opened = open_end(node.item, at_front)
        return opened if node.min >= 1 else Alternation((opened, ANY_STRING))
    return node  # an anchor inside a repeated item: `_normalize` refuses it


def search_form(node: Node) -> Node:
    """The "matches anywhere" reading of a pattern (JSON Schema `pattern`), as an anchor-free AST.

    Per alternative, any text may precede unless it starts with `^` and follow unless it ends with `$`
    (anchors inside groups count: `(^a|b)c`, `^(a|b)$`); `$` means end of input (ECMAScript), except
    Python's `$`, which also allows one final newline as `re.search` does.

    Raises:
        GrammarSyntaxError: an anchor that does not pin the start or end (`a^b`, `(^a)+`).
    """
    return _normalize(open_end(open_end(node, at_front=True), at_front=False), True, True)
