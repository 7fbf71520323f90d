"""Lark terminals to byte-level regex terms, keeping the parts of Lark's matching that regexes lose.

A Lark terminal is an expression over string literals, `"a".."z"` ranges and Python regexes; Lark joins
it into one Python regex and matches it with `re` at the current position. A lexer built from terms
(`grammars.core.lexer`) matches *languages* instead, longest match first. The two agree except for the
features of `re` that are about *which* match wins or about text outside the match; this module
translates those into the regex algebra (intersection and complement) where they stay inside the
terminal, and refuses them where they do not:

- Lazy quantifiers (`.*?`, `+?`, `??`, `{m,n}?`) end the repetition at the first split where all the
  rest R of the terminal matches. Language for `A X*? R`: the strings of `A X* R` except those where R
  matches a proper prefix of what follows a split one or more repetitions sooner,
  `A X* (X+ R & (R.* - R))` (for `{m,n}?` the same, count by count; when R reads behind it, the older
  rule: the first place where R's first non-empty item matches). This is exact when X's strings are prefix-free (`.`, `[^"\\\\]|\\\\.`, `(.|\\n)`); when they are
  not (`\\\\/|[^/]`, where `re` picks the split by alternative order and backtracking) the
  quantifier keeps its plain language, which for escape loops like that is `re`'s result as well.
- Lookbehind `(?<!X)` / `(?<=X)` restricts what the terminal matched before it: `P & ~(.*X)`.
  It must have terminal text before it (else it would read the previous token: refused).
- Lookahead `(?!X)` / `(?=X)` restricts what the terminal matches after it: `R & ~(X.*)`. It must have
  terminal text after it (else it would read the next token: refused). A lookahead longer than the
  rest of the terminal is judged on the terminal's own text only. `\\b` may end a lookahead after
  word characters (the keyword idiom `NAME: /(?!(if|else)\\b)\\w+/`); the token's end counts as a
  boundary there, as it is whenever the terminal cannot continue with a word character.
- Backreferences, atomic groups, possessive quantifiers, conditionals: refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from lark import Token, Tree
from lark.exceptions import GrammarError as LarkGrammarError
from lark.load_grammar import _literal_to_pattern, eval_escaping

from grammars.core import byte_regex as rx
from grammars.core.charset import CharSet, case_fold, utf8_term
from grammars.core.lexer import is_empty_language
from grammars.errors import GrammarError, GrammarSyntaxError
from grammars.frontends.lark.nodes import Atom, Cat, Look, Node, Or, Rep, regex_nodes
from grammars.frontends.regex.syntax import parse_regex

#: Builds the error for a problem found at a grammar token (the loader knows which file it came from).
ErrorAt = Callable[[Token, str], GrammarSyntaxError]

#: Widest count range of a bounded lazy quantifier (`{m,n}?`) resolved exactly (one term per count).
_MAX_LAZY_SPAN = 16
#: Lark's repetition operators as (min, max) counts.
_REPEAT_OPS = {"?": (0, 1), "*": (0, None), "+": (1, None)}


def repetition(children: list, error_at: ErrorAt) -> tuple[Tree | Token, int, int | None]:
    """The item and (min, max) counts of a Lark `expr` node: `x?`, `x*`, `x+`, `x ~ n`, `x ~ n..m`.

    Raises:
        GrammarSyntaxError: a range whose maximum is below its minimum.
    """
    item, op, *numbers = children
    if op != "~":
        return (item, *_REPEAT_OPS[str(op)])
    low = int(numbers[0])
    high = int(numbers[1]) if len(numbers) > 1 else low
    if high < low:
        raise error_at(numbers[1], f"bad repetition range {low}..{high}")
    return item, low, high


class TerminalCompiler:
    """Turns Lark terminal trees and literals into terms, reporting problems at grammar tokens.

    Args:
        error_at: makes a located error for a token of the grammar text.
    """

    def __init__(self, error_at: ErrorAt) -> None:
        self._error_at = error_at

    def term(self, tree: Tree | Token) -> rx.Term:
        """The term of a terminal's definition tree (or of one literal token of a rule).

        Raises:
            GrammarSyntaxError: bad regex or literal, or a feature that cannot be enforced, located at
                the grammar token it comes from.
        """
        node = self._node(tree)
        if not _is_special(node):
            return _plain(node)
        return self._resolve(_flatten(node), rx.EPSILON, is_at_end=True)

    # ------------------------------------------------------------------------------------------
    # Lark trees to nodes
    # ------------------------------------------------------------------------------------------
    def _node(self, tree: Tree | Token) -> Node:
        if isinstance(tree, Token):
            return self._literal(tree)
        kind = tree.data
        if kind == "expansions":
            return Or(tuple(self._node(child) for child in tree.children))
        if kind == "expansion":
            return Cat(tuple(self._node(child) for child in tree.children))
        if kind == "value":
            return self._node(tree.children[0])
        if kind == "literal":
            return self._literal(cast(Token, tree.children[0]))  # Lark's loader: a STRING or REGEXP token
        if kind == "range":
            first, last = cast("list[Token]", tree.children)
            return Atom(self._range(first, last))
        if kind == "maybe":
            return Rep(self._node(tree.children[0]), 0, 1)
        if kind == "expr":
            item, low, high = repetition(tree.children, self._error_at)
            return Rep(self._node(item), low, high)
        token = _first_token(tree)
        reason = f"{kind.replace('_', ' ')} is not allowed inside a terminal"
        raise self._error_at(token, reason) if token is not None else GrammarError(reason)

    def _literal(self, token: Token) -> Node:
        text = token.value
        if token.type == "STRING" and text.rstrip("imslux") in ('""', ""):
            return Atom(rx.EPSILON)  # an empty string literal: the empty sequence (Lark refuses it)
        try:
            pattern = _literal_to_pattern(token)
        except LarkGrammarError as exc:
            raise self._error_at(token, str(exc).splitlines()[0]) from exc
        flags = frozenset(pattern.flags)
        if token.type == "STRING":
            return Atom(_string_term(pattern.value, "i" in flags))
        return self._regex(token, pattern.value, flags)

    def _range(self, first: Token, last: Token) -> rx.Term:
        low, high = eval_escaping(first.value[1:-1]), eval_escaping(last.value[1:-1])
        if len(low) != 1 or len(high) != 1:
            raise self._error_at(first, f"a range needs single characters, got {first.value}..{last.value}")
        return utf8_term(CharSet.range(ord(low), ord(high)))

    def _regex(self, token: Token, pattern: str, flags: frozenset[str]) -> Node:
        if "l" in flags:
            raise self._error_at(token, "the LOCALE flag 'l' is not supported (Python refuses it for text patterns)")
        try:
            parsed = parse_regex(
                pattern,
                flavor="python",
                ignore_case="i" in flags,
                dotall="s" in flags,
                multiline="m" in flags,
                verbose="x" in flags,
            )  # "u" (Unicode classes) is the default
            return regex_nodes(parsed, token)
        except GrammarSyntaxError as exc:
            raise self._error_at(token, f"in regex {token.value}: {exc.reason}") from exc

    # ------------------------------------------------------------------------------------------
    # Laziness and lookarounds
    # ------------------------------------------------------------------------------------------
    def _resolve(self, items: tuple[Node, ...], before: rx.Term, is_at_end: bool) -> rx.Term:
        """`before` followed by `items`, with lookarounds and lazy quantifiers applied.

        `before` is what the terminal matched ahead of `items` (lookbehinds read it); `is_at_end`
        says whether the terminal ends after `items` (lookaheads must not read past it).
        """
        matched = before
        index = 0
        while index < len(items):
            item = items[index]
            if isinstance(item, Look) and item.is_behind:
                if matched.nullable:
                    raise self._error_at(
                        item.origin,
                        "a lookbehind at the start of a terminal (or of a repeated "
                        "group) reads text outside it: cannot be enforced",
                    )
                matched = rx.difference(matched, item.term) if item.is_negative else rx.intersect(matched, item.term)
            elif isinstance(item, Look):
                if _plain_seq(items[index + 1 :]).nullable:
                    where = "terminal" if is_at_end else "group"
                    raise self._error_at(
                        item.origin, f"a lookahead at the end of a {where} reads past it: cannot be enforced"
                    )
                rest = items[index + 1 :]
                if not _reads_behind(rest):  # the rest starts where the lookahead looks: exact
                    after = self._resolve(rest, rx.EPSILON, is_at_end)
                    after = rx.difference(after, item.term) if item.is_negative else rx.intersect(after, item.term)
                    return rx.concat(matched, after)
                whole = self._resolve(rest, matched, is_at_end)
                # Exact when `matched` has one length (a delimiter); else the split point is approximate.
                looked = rx.concat(matched, item.term)
                return rx.difference(whole, looked) if item.is_negative else rx.intersect(whole, looked)
            elif isinstance(item, Rep) and item.lazy_origin is not None:
                matched, index = self._lazy(item, item.lazy_origin, items, index, matched, is_at_end)
                continue
            elif isinstance(item, Or) and _is_special(item):
                is_last = is_at_end and index == len(items) - 1
                matched = rx.alt(*(self._resolve(_flatten(o), matched, is_last) for o in item.options))
            elif isinstance(item, Rep) and _is_special(item):
                body = self._resolve(_flatten(item.item), rx.EPSILON, is_at_end=False)
                matched = rx.concat(matched, rx.repeat(body, item.min, item.max))
            else:
                matched = rx.concat(matched, _plain(item))
            index += 1
        return matched

    def _lazy(
        self, lazy: Rep, origin: Token, items: tuple[Node, ...], index: int, before: rx.Term, is_at_end: bool
    ) -> tuple[rx.Term, int]:
        """Resolve the lazy repetition `lazy` (= `items[index]`, written in `origin`); returns the matched
        term and the next index."""
        body = self._resolve(_flatten(lazy.item), rx.EPSILON, is_at_end=False)
        repeated = rx.concat(before, rx.repeat(body, lazy.min, lazy.max))
        if not _is_prefix_free(body):
            return repeated, index + 1
        head_end = _head_end(items, index + 1)
        if head_end is None:
            if not is_at_end:
                raise self._error_at(
                    origin,
                    "a lazy quantifier at the end of a group stops depending on text outside it: cannot be enforced",
                )
            # Nothing after it must match: `re` stops after the fewest repetitions.
            return rx.concat(before, rx.repeat(body, lazy.min, lazy.min)), index + 1
        rest_items = items[index + 1 :]
        if (lazy.max is None or lazy.max - lazy.min <= _MAX_LAZY_SPAN) and not _reads_behind(rest_items):
            # `re` tries the fewest repetitions first and stops at the first split where all the rest
            # matches: excluded are the texts where the rest also matches a prefix of what follows
            # an earlier split (one or more repetitions sooner, still within the counts).
            rest = self._resolve(rest_items, rx.EPSILON, is_at_end)
            # What follows a sooner split starts with a match of the rest but is not one itself (when it
            # is, that sooner split is the valid one and the text stays).
            cut_short = rx.difference(rx.concat(rest, rx.ANYTHING), rest)
            if lazy.max is None:
                sooner = rx.concat(repeated, rx.intersect(rx.concat(rx.repeat(body, 1, None), rest), cut_short))
            else:
                sooner = rx.alt(
                    *(
                        rx.concat(
                            before,
                            rx.repeat(body, count, count),
                            rx.intersect(rx.concat(rx.repeat(body, 1, lazy.max - count), rest), cut_short),
                        )
                        for count in range(lazy.min, lazy.max)
                    )
                )
            return rx.difference(rx.concat(repeated, rest), sooner), len(items)
        candidates = self._resolve(items[index + 1 : head_end + 1], repeated, is_at_end=False)
        earliest = rx.difference(candidates, rx.concat(candidates, rx.ANY_BYTE, rx.ANYTHING))
        return earliest, head_end + 1


# ----------------------------------------------------------------------------------------------
# Node helpers
# ----------------------------------------------------------------------------------------------


def _string_term(value: str, ignore_case: bool) -> rx.Term:
    if not ignore_case:
        return rx.literal(value.encode("utf-8"))
    return rx.concat(*(utf8_term(case_fold(CharSet.of(char))) for char in value))


def _first_token(tree: Tree) -> Token | None:
    return next(iter(tree.scan_values(lambda v: isinstance(v, Token))), None)


def _is_special(node: Node) -> bool:
    if isinstance(node, Look):
        return True
    if isinstance(node, Rep):
        return node.lazy_origin is not None or _is_special(node.item)
    if isinstance(node, Cat):
        return any(_is_special(i) for i in node.items)
    if isinstance(node, Or):
        return any(_is_special(o) for o in node.options)
    return False


def _plain(node: Node) -> rx.Term:
    """The node's language ignoring lookarounds and laziness (exact for nodes that have neither)."""
    if isinstance(node, Atom):
        return node.term
    if isinstance(node, Look):
        return rx.EPSILON
    if isinstance(node, Cat):
        return rx.concat(*(_plain(i) for i in node.items))
    if isinstance(node, Or):
        return rx.alt(*(_plain(o) for o in node.options))
    return rx.repeat(_plain(node.item), node.min, node.max)


def _plain_seq(items: tuple[Node, ...]) -> rx.Term:
    return rx.concat(*(_plain(i) for i in items))


def _flatten(node: Node) -> tuple[Node, ...]:
    """The node as a flat sequence: nested sequences spliced, one-option alternations unwrapped."""
    if isinstance(node, Cat):
        return tuple(item for child in node.items for item in _flatten(child))
    if isinstance(node, Or) and len(node.options) == 1:
        return _flatten(node.options[0])
    return (node,)


def _reads_behind(items: tuple[Node, ...]) -> bool:
    """Whether a lookbehind among `items` (at any depth) reads the text before them."""

    def reads(node: Node) -> bool:
        if isinstance(node, Look):
            return node.is_behind
        if isinstance(node, Cat):
            return any(reads(child) for child in node.items)
        if isinstance(node, Or):
            return any(reads(option) for option in node.options)
        return isinstance(node, Rep) and reads(node.item)

    return any(reads(item) for item in items)


def _head_end(items: tuple[Node, ...], start: int) -> int | None:
    """Index of the first item from `start` on that cannot match the empty string, if any."""
    for index in range(start, len(items)):
        if not _plain(items[index]).nullable:
            return index
    return None


def _is_prefix_free(term: rx.Term) -> bool:
    """Whether no string of `term` is a proper prefix of another (then a repetition splits one way)."""
    return is_empty_language(rx.intersect(term, rx.concat(term, rx.ANY_BYTE, rx.ANYTHING)))
