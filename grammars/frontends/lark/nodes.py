"""A Lark terminal as nodes: plain parts as terms, lazy repetitions and lookarounds kept apart.

`grammars.frontends.lark.terminals` builds these from Lark's terminal trees and, for `/regex/` parts,
from the AST of Stencil's regex parser (`regex_nodes`), then gives the lazy and lookaround nodes the
meaning `re` gives them. Every part without either is lowered whole, by the regex front end's own
lowering (`grammars.frontends.regex.lowering`).
"""

from __future__ import annotations

from dataclasses import dataclass

from lark import Token

from grammars.core import byte_regex as rx
from grammars.core.charset import utf8_term
from grammars.core.lexer import is_empty_language
from grammars.errors import GrammarSyntaxError
from grammars.frontends.regex import ast
from grammars.frontends.regex.lowering import lower


@dataclass(frozen=True)
class Atom:
    """A plain part: its term is its whole meaning."""

    term: rx.Term


@dataclass(frozen=True)
class Cat:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    options: tuple[Node, ...]


@dataclass(frozen=True)
class Rep:
    """`item` `min` to `max` times; `lazy_origin`: for a lazy one (`*?`), the token it was written in."""

    item: Node
    min: int
    max: int | None
    lazy_origin: Token | None = None


@dataclass(frozen=True)
class Look:
    """A zero-width assertion on the text before (behind) or after this point, negated or not.

    `term` is the language that text must (or must not) be in: `.*X` for a lookbehind `X`, `X.*` for
    a lookahead `X`, `X(|\\W.*)` for a lookahead `X\\b` whose strings end with a word character.
    """

    term: rx.Term
    is_behind: bool
    is_negative: bool
    origin: Token


Node = Atom | Cat | Or | Rep | Look


def regex_nodes(node: ast.Node, origin: Token) -> Node:
    """Nodes for a parsed regex: plain parts lowered whole, lazy and lookaround parts kept as nodes.

    Args:
        node: from `grammars.frontends.regex.syntax.parse_regex`.
        origin: the grammar token the regex comes from (the resolution's errors name it).

    Raises:
        GrammarSyntaxError: located in the regex: what the lowering refuses (a misplaced anchor, `\\b`
            outside a lookahead), `\\b` in a lookahead after text that may end in a non-word character,
            or a lookaround containing a lookaround or a lazy quantifier.
    """
    if isinstance(node, ast.Group):
        return regex_nodes(node.item, origin)
    if isinstance(node, (ast.Lookahead, ast.Lookbehind)):
        return _look(node, origin)
    if isinstance(node, ast.Concat) and _has_lazy_or_lookaround(node):
        return Cat(tuple(regex_nodes(item, origin) for item in node.items))
    if isinstance(node, ast.Alternation) and _has_lazy_or_lookaround(node):
        return Or(tuple(regex_nodes(option, origin) for option in node.options))
    if isinstance(node, ast.Repetition) and _has_lazy_or_lookaround(node):
        lazy_origin = origin if node.is_lazy else None
        return Rep(regex_nodes(node.item, origin), node.min, node.max, lazy_origin)
    return Atom(lower(node, utf8_term))


def _look(node: ast.Lookahead | ast.Lookbehind, origin: Token) -> Look:
    if _has_lazy_or_lookaround(node.item):
        raise GrammarSyntaxError(
            "a lookaround containing a lookaround or a lazy quantifier is not supported", node.source, node.offset
        )
    is_behind = isinstance(node, ast.Lookbehind)
    term = rx.concat(rx.ANYTHING, lower(node.item, utf8_term)) if is_behind else _lookahead_term(node.item)
    return Look(term, is_behind=is_behind, is_negative=node.is_negative, origin=origin)


def _lookahead_term(body: ast.Node) -> rx.Term:
    """The language of a lookahead's `body` (which the parser already followed by any text).

    A `\\b` among its items (the keyword idiom `(?!(if|else)\\b)`) is exact after word characters: what
    follows is then nothing or starts with a non-word character.
    """
    items = _sequence(body)
    for index in reversed(range(len(items))):
        boundary = items[index]
        if isinstance(boundary, ast.WordBoundary) and not boundary.is_negated:
            before = lower(ast.Concat(items[:index]), utf8_term)
            if not is_empty_language(rx.difference(before, rx.concat(rx.ANYTHING, utf8_term(boundary.word)))):
                raise GrammarSyntaxError(
                    "\\b in a lookahead is supported only after word characters", boundary.source, boundary.offset
                )
            after = lower(ast.Concat(items[index + 1 :]), utf8_term)
            non_word_first = rx.optional(rx.concat(utf8_term(~boundary.word), rx.ANYTHING))
            return rx.concat(before, rx.intersect(after, non_word_first))
    return lower(body, utf8_term)


def _sequence(node: ast.Node) -> tuple[ast.Node, ...]:
    """`node` as a flat sequence of items: nested concatenations and groups spliced."""
    if isinstance(node, ast.Group):
        return _sequence(node.item)
    if isinstance(node, ast.Concat):
        return tuple(item for child in node.items for item in _sequence(child))
    return (node,)


def _has_lazy_or_lookaround(node: ast.Node) -> bool:
    if isinstance(node, (ast.Lookahead, ast.Lookbehind)):
        return True
    if isinstance(node, ast.Repetition):
        return node.is_lazy or _has_lazy_or_lookaround(node.item)
    if isinstance(node, ast.Group):
        return _has_lazy_or_lookaround(node.item)
    if isinstance(node, ast.Concat):
        return any(map(_has_lazy_or_lookaround, node.items))
    if isinstance(node, ast.Alternation):
        return any(map(_has_lazy_or_lookaround, node.options))
    return False
