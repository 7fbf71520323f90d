"""Python regexes of Lark terminals as terminal nodes, via `re`'s own parser.

Lark terminals are Python regexes, so `re`'s parser (`re._parser`) reads them exactly as Lark does.
Most regexes go whole to `grammars.frontends.regex.syntax.regex_term`; the ones with lazy quantifiers or
lookarounds are split here into nodes (`Cat`, `Or`, `Rep`, `Look`) whose plain parts are printed
back to regex text and lowered by `regex_term`, while `grammars.frontends.lark.terminals` gives the lazy and
lookaround nodes their meaning.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lark import Token

from grammars.core import byte_regex as rx
from grammars.core.lexer import is_empty_language

try:
    from re import _constants as sre
    from re import _parser as sre_parse
except ImportError:  # Python 3.10
    import sre_constants as sre  # type: ignore[no-redef]
    import sre_parse  # type: ignore[no-redef]

#: re's parsed form: a list of (opcode, argument) pairs.
SreItems = Any


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
    item: Node
    min: int
    max: int | None
    is_lazy: bool
    origin: Token | None = None


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

#: Lowers regex text under flag letters ("i", "m", "s", "x", and "a" from an inline `(?a)`) to a term.
LowerText = Callable[[str, frozenset[str]], rx.Term]
#: Makes the error for an unsupported construct.
Fail = Callable[[str], Exception]

_SPECIAL = (sre.MIN_REPEAT, sre.ASSERT, sre.ASSERT_NOT)
_REFUSED = {
    sre.GROUPREF: "a backreference",
    sre.GROUPREF_EXISTS: "a conditional group",
}
for _name, _what in (("ATOMIC_GROUP", "an atomic group"), ("POSSESSIVE_REPEAT", "a possessive quantifier")):
    if hasattr(sre, _name):  # Python 3.11+
        _REFUSED[getattr(sre, _name)] = _what
_FLAG_LETTERS = (
    (sre.SRE_FLAG_IGNORECASE, "i"),
    (sre.SRE_FLAG_MULTILINE, "m"),
    (sre.SRE_FLAG_DOTALL, "s"),
    (sre.SRE_FLAG_ASCII, "a"),
)
_FLAG_OF_LETTER = {
    "i": sre.SRE_FLAG_IGNORECASE,
    "s": sre.SRE_FLAG_DOTALL,
    "m": sre.SRE_FLAG_MULTILINE,
    "x": sre.SRE_FLAG_VERBOSE,
    "a": sre.SRE_FLAG_ASCII,
}
_CATEGORY_TEXT = {
    sre.CATEGORY_DIGIT: r"\d",
    sre.CATEGORY_NOT_DIGIT: r"\D",
    sre.CATEGORY_SPACE: r"\s",
    sre.CATEGORY_NOT_SPACE: r"\S",
    sre.CATEGORY_WORD: r"\w",
    sre.CATEGORY_NOT_WORD: r"\W",
}
_AT_TEXT = {
    sre.AT_BEGINNING: "^",
    sre.AT_BEGINNING_STRING: r"\A",
    sre.AT_END: "$",
    sre.AT_END_STRING: r"\Z",
    sre.AT_BOUNDARY: r"\b",
    sre.AT_NON_BOUNDARY: r"\B",
}


def parse_python_regex(pattern: str, letters: frozenset[str]) -> tuple[SreItems, int]:
    """`re`'s parse of `pattern` under Lark's flag letters, and the flags in force after it.

    Raises:
        re.error: the pattern is not a valid Python regex.
    """
    flags = 0
    for letter in letters:
        flags |= _FLAG_OF_LETTER.get(letter, 0)
    parsed = sre_parse.parse(pattern, flags)
    return list(parsed), parsed.state.flags


def has_special(items: SreItems) -> bool:
    """Whether the parsed regex has a lazy quantifier or a lookaround anywhere."""
    for op, arg in items:
        if op in _SPECIAL:
            return True
        for sub in _children(op, arg):
            if has_special(sub):
                return True
    return False


def sre_nodes(items: SreItems, flags: int, origin: Token, lower: LowerText, fail: Fail) -> Node:
    """Nodes for a parsed regex: plain parts lowered whole, lazy and lookaround parts kept as nodes.

    Raises:
        whatever `fail` makes, for backreferences, atomic groups, possessive quantifiers, and
        lookarounds that contain lookarounds or lazy quantifiers.
    """
    if not has_special(items):
        return Atom(lower(unparse(items, fail), _letters(flags)))
    return Cat(tuple(_node(op, arg, flags, origin, lower, fail) for op, arg in items))


def _node(op: Any, arg: Any, flags: int, origin: Token, lower: LowerText, fail: Fail) -> Node:
    if op is sre.BRANCH and has_special([(op, arg)]):
        return Or(tuple(sre_nodes(branch, flags, origin, lower, fail) for branch in arg[1]))
    if op is sre.SUBPATTERN:
        _group, add_flags, del_flags, body = arg
        return sre_nodes(body, (flags | add_flags) & ~del_flags, origin, lower, fail)
    if op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
        low, high, body = arg
        item = sre_nodes(body, flags, origin, lower, fail)
        return Rep(item, low, None if high is sre.MAXREPEAT else high, is_lazy=op is sre.MIN_REPEAT, origin=origin)
    if op in (sre.ASSERT, sre.ASSERT_NOT):
        direction, body = arg
        if has_special(body):
            raise fail("a lookaround containing a lookaround or a lazy quantifier is not supported")
        return Look(
            _look_term(body, direction < 0, flags, lower, fail),
            is_behind=direction < 0,
            is_negative=op is sre.ASSERT_NOT,
            origin=origin,
        )
    return Atom(lower(unparse([(op, arg)], fail), _letters(flags)))


def _look_term(body: SreItems, is_behind: bool, flags: int, lower: LowerText, fail: Fail) -> rx.Term:
    """The language a lookaround's text is tested against (see `Look`)."""
    letters = _letters(flags)
    if is_behind:
        return rx.concat(rx.ANYTHING, lower(unparse(body, fail), letters))
    if body and body[-1] == (sre.AT, sre.AT_BOUNDARY):
        # `X\b`, the keyword idiom `(?!(if|else)\b)`: X, then the end or a non-word character.
        word = lower(r"\w", letters)
        inner = lower(unparse(body[:-1], fail), letters)
        if not is_empty_language(rx.difference(inner, rx.concat(rx.ANYTHING, word))):
            raise fail(r"\b at the end of a lookahead is supported only after word characters")
        return rx.concat(inner, rx.optional(rx.concat(lower(r"\W", letters), rx.ANYTHING)))
    return rx.concat(lower(unparse(body, fail), letters), rx.ANYTHING)


def _letters(flags: int) -> frozenset[str]:
    """Flag letters that still matter once the text is parsed (not verbose: the text is re-printed)."""
    return frozenset(letter for letter, bit in _FLAG_OF_LETTER.items() if flags & bit and letter != "x")


def _children(op: Any, arg: Any) -> list[SreItems]:
    if op is sre.BRANCH:
        return list(arg[1])
    if op is sre.SUBPATTERN:
        return [arg[3]]
    if op in (sre.MAX_REPEAT, sre.MIN_REPEAT) or getattr(sre, "POSSESSIVE_REPEAT", None) is op:
        return [arg[2]]
    if op in (sre.ASSERT, sre.ASSERT_NOT):
        return [arg[1]]
    if getattr(sre, "ATOMIC_GROUP", None) is op:
        return [arg]
    return []


# ----------------------------------------------------------------------------------------------
# Printing parsed regexes back to text
# ----------------------------------------------------------------------------------------------


def unparse(items: SreItems, fail: Fail) -> str:
    """Regex text equivalent to the parsed `items` (flags of the whole pattern not included)."""
    return "".join(_unparse_one(op, arg, fail) for op, arg in items)


def _unparse_one(op: Any, arg: Any, fail: Fail) -> str:
    if op in _REFUSED:
        raise fail(f"{_REFUSED[op]} is not supported in a terminal")
    if op is sre.LITERAL:
        return _escape(arg)
    if op is sre.NOT_LITERAL:
        return f"[^{_escape(arg)}]"
    if op is sre.ANY:
        return "."
    if op is sre.IN:
        return "[" + "".join(_class_item(item_op, item_arg, fail) for item_op, item_arg in arg) + "]"
    if op is sre.CATEGORY:
        return _CATEGORY_TEXT[arg]
    if op is sre.AT:
        return _AT_TEXT[arg]
    if op is sre.BRANCH:
        return "(?:" + "|".join(unparse(branch, fail) for branch in arg[1]) + ")"
    if op is sre.SUBPATTERN:
        _group, add_flags, del_flags, body = arg
        on, off = _flag_letters(add_flags), _flag_letters(del_flags)
        return f"(?{on}{'-' + off if off else ''}:{unparse(body, fail)})"
    if op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
        low, high, body = arg
        upper = "" if high is sre.MAXREPEAT else str(high)
        lazy = "?" if op is sre.MIN_REPEAT else ""
        return f"(?:{unparse(body, fail)}){{{low},{upper}}}{lazy}"
    if op in (sre.ASSERT, sre.ASSERT_NOT):
        direction, body = arg
        kind = ("<" if direction < 0 else "") + ("!" if op is sre.ASSERT_NOT else "=")
        return f"(?{kind}{unparse(body, fail)})"
    raise fail(f"the regex construct {op} is not supported in a terminal")


def _class_item(op: Any, arg: Any, fail: Fail) -> str:
    if op is sre.NEGATE:
        return "^"
    if op is sre.LITERAL:
        return _escape(arg)
    if op is sre.RANGE:
        return f"{_escape(arg[0])}-{_escape(arg[1])}"
    if op is sre.CATEGORY:
        return _CATEGORY_TEXT[arg]
    raise fail(f"the character class item {op} is not supported in a terminal")


def _flag_letters(flags: int) -> str:
    return "".join(letter for bit, letter in _FLAG_LETTERS if flags & bit)


def _escape(code: int) -> str:
    """A character as regex text that means it alone, inside or outside a class."""
    char = chr(code)
    if char.isascii() and (char.isalnum() or char == "_"):
        return char
    if char.isascii() and char.isprintable() and char != " ":
        return "\\" + char
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"
