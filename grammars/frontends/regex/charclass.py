"""The character-level half of regex syntax: escapes, shorthand classes, `\\p{..}` and `[...]` classes.

`grammars.frontends.regex.syntax` parses structure (groups, alternation, quantifiers, anchors) and calls in here for
everything that denotes a set of characters. Two flavors:

- "python": Python `re` syntax for str patterns, mirroring CPython's parser where it matters (octal
  escapes, `{` literals, `]` first in a class, Unicode `\\d \\w \\s`), plus `\\p{..}` / `\\pL` and `\\z`,
  which `re` lacks but users (and the Rust / PCRE syntaxes) write. Where `re` only warns about a
  construct whose meaning is about to change (`[[`, `--`, `&&`, `~~`, `||` in a class), we refuse it:
  it is almost always POSIX or set-operation syntax from another engine, silently misread.
- "ecmascript": ECMA-262 with the `u` flag's escapes (`\\u{..}`, surrogate pairs, `\\p{..}`), and the web
  (Annex B) leniency for `{`, `]`, `}` literals, identity escapes of punctuation and `[\\w-.]`. Escapes of
  ASCII letters that ECMAScript does not define (`\\A`, `\\z`, `\\e`) are errors, not literals.
"""

from __future__ import annotations

import functools
import unicodedata
from dataclasses import dataclass
from enum import Enum
from typing import Literal, cast

from grammars.core import unicode_data
from grammars.core.charset import ANY_CHAR, CharSet, case_fold, unicode_category
from grammars.errors import GrammarSyntaxError

Flavor = Literal["python", "ecmascript"]

ASCII_DIGITS = CharSet.range(ord("0"), ord("9"))
ASCII_WORD = ASCII_DIGITS | CharSet.range(ord("A"), ord("Z")) | CharSet.range(ord("a"), ord("z")) | CharSet.of("_")
PYTHON_ASCII_SPACE = CharSet.of(" ", "\t", "\n", "\r", "\f", "\v")
#: ECMAScript WhiteSpace + LineTerminator: TAB VT FF SP NBSP ZWNBSP, the Zs category, LF CR LS PS.
ECMASCRIPT_SPACE = CharSet(
    (
        (0x09, 0x0D),
        (0x20, 0x20),
        (0xA0, 0xA0),
        (0x1680, 0x1680),
        (0x2000, 0x200A),
        (0x2028, 0x2029),
        (0x202F, 0x202F),
        (0x205F, 0x205F),
        (0x3000, 0x3000),
        (0xFEFF, 0xFEFF),
    )
)
ECMASCRIPT_LINE_TERMINATORS = CharSet.of("\n", "\r", "\u2028", "\u2029")

_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v"}
_HEX = "0123456789abcdefABCDEF"
_OCTAL = "01234567"
#: Binary properties derivable from unicodedata: name -> highest code point (Assigned is computed).
_BINARY_PROPERTIES = {"Any": 0x10FFFF, "ASCII": 0x7F, "Assigned": 0x10FFFF}


@dataclass(frozen=True)
class Flags:
    """The inline-flag state a part of a pattern is parsed under."""

    ignore_case: bool = False
    dotall: bool = False
    multiline: bool = False
    verbose: bool = False
    ascii: bool = False


class Anchor(Enum):
    """Zero-width escapes: `\\A` (start), `\\Z` / `\\z` (end of input), `\\b` and `\\B` (word boundary)."""

    START = "start"
    END = "end"
    WORD_BOUNDARY = "word boundary"
    NOT_WORD_BOUNDARY = "not word boundary"


class Scanner:
    """A cursor over the pattern text that makes located errors."""

    def __init__(self, pattern: str, flavor: Flavor) -> None:
        self.pattern = pattern
        self.flavor = flavor
        self.pos = 0

    def peek(self, ahead: int = 0) -> str:
        """The character `ahead` positions on, or "" past the end."""
        index = self.pos + ahead
        return self.pattern[index : index + 1]

    def take(self) -> str:
        char = self.peek()
        self.pos += len(char)
        return char

    def take_if(self, text: str) -> bool:
        if self.pattern.startswith(text, self.pos):
            self.pos += len(text)
            return True
        return False

    def take_while(self, allowed: str, max_count: int) -> str:
        start = self.pos
        while self.pos - start < max_count and self.peek() and self.peek() in allowed:
            self.pos += 1
        return self.pattern[start : self.pos]

    def error(self, reason: str, offset: int | None = None) -> GrammarSyntaxError:
        return GrammarSyntaxError(reason, self.pattern, self.pos if offset is None else offset)


def fold(chars: CharSet, flags: Flags) -> CharSet:
    """`chars` closed under case-insensitive equality when the `i` flag is on."""
    return case_fold(chars, ascii_only=flags.ascii) if flags.ignore_case else chars


@functools.cache
def dot_class(flavor: Flavor, dotall: bool) -> CharSet:
    """What `.` matches: all but line terminators (Python: "\\n" only) unless `s` (dotall)."""
    if dotall:
        return ANY_CHAR
    return ~(CharSet.of("\n") if flavor == "python" else ECMASCRIPT_LINE_TERMINATORS)


@functools.cache
def shorthand_class(letter: str, flavor: Flavor, ascii_only: bool) -> CharSet:
    """`\\d \\w \\s` (and `\\D \\W \\S`): ASCII in ECMAScript (Unicode `\\s`), Unicode in Python unless `(?a)`."""
    kind = letter.lower()
    if flavor == "ecmascript":
        chars = {"d": ASCII_DIGITS, "w": ASCII_WORD, "s": ECMASCRIPT_SPACE}[kind]
    elif ascii_only:
        chars = {"d": ASCII_DIGITS, "w": ASCII_WORD, "s": PYTHON_ASCII_SPACE}[kind]
    else:
        chars = CharSet(unicode_data.python_class(kind))
    return ~chars if letter.isupper() else chars


def _property_class(scanner: Scanner, negated: bool, flags: Flags, start: int) -> CharSet:
    """The body of `\\p` / `\\P` (after the letter): `{Name}`, `{gc=Name}`, or (python) one letter."""
    is_python = scanner.flavor == "python"
    if scanner.take_if("{"):
        end = scanner.pattern.find("}", scanner.pos)
        if end < 0:
            raise scanner.error("missing } after \\p{", start)
        body = scanner.pattern[scanner.pos : end]
        scanner.pos = end + 1
    elif is_python and scanner.peek().isalpha():
        body = scanner.take()
    else:
        raise scanner.error("\\p and \\P need a property name in braces: \\p{L}", start)
    name, _, value = body.rpartition("=")
    chars = None
    if name.replace(" ", "").replace("_", "").lower() in ("", "gc", "generalcategory"):
        chars = _named_property(value, loose=is_python, allow_binary=not name)
    if chars is None:
        raise scanner.error(
            f"unsupported Unicode property \\p{{{body}}} (general categories, Any, ASCII"
            " and Assigned are supported; scripts and other properties are not)",
            start,
        )
    chars = fold(chars, flags)
    return ~chars if negated else chars


def _named_property(value: str, *, loose: bool, allow_binary: bool) -> CharSet | None:
    """A general category, or (when `allow_binary`) one of the binary properties Any, ASCII, Assigned."""
    try:
        return unicode_category(value, loose=loose)
    except KeyError:
        pass
    spelled = value.lower() if loose else value
    name = next((n for n in _BINARY_PROPERTIES if (n.lower() if loose else n) == spelled), None)
    if not allow_binary or name is None:
        return None
    return ~unicode_category("Cn") if name == "Assigned" else CharSet.range(0, _BINARY_PROPERTIES[name])


def _hex_escape(scanner: Scanner, num_digits: int, start: int) -> int:
    digits = scanner.take_while(_HEX, num_digits)
    if len(digits) != num_digits:
        raise scanner.error(f"incomplete escape {scanner.pattern[start : scanner.pos]}", start)
    return int(digits, 16)


def _unicode_escape(scanner: Scanner, start: int) -> int:
    """After `\\u`: Python's 4 digits; ECMAScript's `{...}` or 4 digits, pairing escaped surrogates."""
    if scanner.flavor == "ecmascript" and scanner.take_if("{"):
        digits = scanner.take_while(_HEX, 8)
        if not digits or not scanner.take_if("}") or int(digits, 16) > 0x10FFFF:
            raise scanner.error("bad \\u{...} escape (1-6 hex digits, at most 10FFFF)", start)
        return int(digits, 16)
    code = _hex_escape(scanner, 4, start)
    if (
        scanner.flavor == "ecmascript"
        and 0xD800 <= code <= 0xDBFF
        and scanner.peek() == "\\"
        and scanner.peek(1) == "u"
    ):
        trail_text = scanner.pattern[scanner.pos + 2 : scanner.pos + 6]
        if len(trail_text) == 4 and all(c in _HEX for c in trail_text) and 0xDC00 <= int(trail_text, 16) <= 0xDFFF:
            scanner.pos += 6
            return 0x10000 + ((code - 0xD800) << 10) + (int(trail_text, 16) - 0xDC00)
    return code


def _is_octal(char: str) -> bool:
    return char != "" and char in _OCTAL


def _numeric_escape(scanner: Scanner, first: str, in_class: bool, start: int) -> int:
    """`\\0`, octal escapes (Python's rules) or a backreference (refused)."""
    if scanner.flavor == "ecmascript":
        if first == "0" and not scanner.peek().isdigit():
            return 0
        if in_class or first == "0":
            raise scanner.error("octal escapes are not supported in ECMAScript patterns", start)
        raise scanner.error("backreferences are not supported", start)
    if first == "0" or in_class:
        if not _is_octal(first):
            raise scanner.error(f"bad escape \\{first}", start)
        code = int(first + scanner.take_while(_OCTAL, 2), 8)
    elif _is_octal(first) and _is_octal(scanner.peek()) and _is_octal(scanner.peek(1)):
        code = int(first + scanner.take() + scanner.take(), 8)
    else:
        raise scanner.error("backreferences are not supported", start)
    if code > 0o377:
        raise scanner.error(
            f"octal escape value {scanner.pattern[start : scanner.pos]} outside of range 0-0o377", start
        )
    return code


def parse_escape(scanner: Scanner, flags: Flags, *, in_class: bool) -> int | CharSet | Anchor:
    """Parse the escape starting at the backslash under the cursor.

    Returns:
        a code point for a single-character escape (usable as a range end; not yet case-folded),
        a CharSet for a class escape (`\\d`, `\\p{..}`; already folded if `\\p` under `i`),
        or an Anchor for `\\b \\B` and (python flavor) `\\A \\Z \\z`, outside classes.

    Raises:
        GrammarSyntaxError: a malformed escape, or a backreference (Stencil cannot enforce it),
            located at the backslash.
    """
    start = scanner.pos
    scanner.take()
    char = scanner.take()
    is_python = scanner.flavor == "python"
    if not char:
        raise scanner.error("trailing backslash at end of pattern", start)
    if char in _SIMPLE_ESCAPES:
        return ord(_SIMPLE_ESCAPES[char])
    if char in "dDwWsS":
        return shorthand_class(char, scanner.flavor, flags.ascii)
    if char in "pP":
        return _property_class(scanner, char == "P", flags, start)
    if char == "b" and in_class:
        return 0x08
    if char in "bB":
        return Anchor.WORD_BOUNDARY if char == "b" else Anchor.NOT_WORD_BOUNDARY
    if char == "x":
        return _hex_escape(scanner, 2, start)
    if char == "u":
        return _unicode_escape(scanner, start)
    if char.isdigit() and char.isascii():
        return _numeric_escape(scanner, char, in_class, start)
    if is_python:
        if char == "a":
            return 0x07
        if char == "U":
            code = _hex_escape(scanner, 8, start)
            if code > 0x10FFFF:
                raise scanner.error(f"bad escape {scanner.pattern[start : scanner.pos]}", start)
            return code
        if char == "N":
            return _named_character(scanner, start)
        if char in "AZz" and not in_class:
            return Anchor.START if char == "A" else Anchor.END
    else:
        if char == "c" and scanner.peek().isascii() and scanner.peek().isalpha():
            return ord(scanner.take()) % 32
        if char == "k":
            raise scanner.error("backreferences are not supported", start)
    if char.isascii() and char.isalpha():
        raise scanner.error(f"bad escape \\{char}", start)
    return ord(char)


def _named_character(scanner: Scanner, start: int) -> int:
    if not scanner.take_if("{"):
        raise scanner.error("missing { after \\N", start)
    end = scanner.pattern.find("}", scanner.pos)
    if end < 0:
        raise scanner.error("missing }, unterminated name", start)
    name = scanner.pattern[scanner.pos : end]
    scanner.pos = end + 1
    try:
        char = unicodedata.lookup(name)
    except KeyError:
        char = ""
    if len(char) != 1:
        raise scanner.error(f"undefined character name {name!r}", start)
    return ord(char)


def parse_class(scanner: Scanner, flags: Flags) -> CharSet:
    """Parse a bracket class `[...]` starting at the `[` under the cursor; returns its (folded) set.

    Raises:
        GrammarSyntaxError: unterminated class, reversed range `[z-a]`, range with a class end
            (python), bad escape, or an ambiguous nested set / set operation (python).
    """
    start = scanner.pos
    scanner.take()
    is_python = scanner.flavor == "python"
    if is_python and scanner.peek() == "[":
        raise scanner.error("possible nested set (POSIX [[:alpha:]] or set syntax?): escape the [ as \\[", scanner.pos)
    negate = scanner.take_if("^")
    parts: list[CharSet] = []
    num_items = 0
    while True:
        item_start = scanner.pos
        char = scanner.peek()
        if not char:
            raise scanner.error("unterminated character set", start)
        if char == "]" and (num_items or not is_python):
            scanner.take()
            break
        first = _class_atom(scanner, flags, num_items > 0)
        num_items += 1
        if scanner.peek() != "-" or scanner.peek(1) in ("]", ""):
            parts.append(_atom_set(first, flags))
            continue
        scanner.take()
        if is_python and scanner.peek() == "-":
            raise scanner.error("possible set difference (--): escape the - as \\-", scanner.pos - 1)
        second = _class_atom(scanner, flags, True)
        if isinstance(first, int) and isinstance(second, int):
            if second < first:
                raise scanner.error(f"bad character range {scanner.pattern[item_start : scanner.pos]}", item_start)
            parts.append(fold(CharSet.range(first, second), flags))
        elif is_python:
            raise scanner.error(f"bad character range {scanner.pattern[item_start : scanner.pos]}", item_start)
        else:
            parts += [_atom_set(first, flags), CharSet.of("-"), _atom_set(second, flags)]
    chars = CharSet(tuple(r for part in parts for r in part.ranges))
    return ~chars if negate else chars


def _class_atom(scanner: Scanner, flags: Flags, has_items: bool) -> int | CharSet:
    """One class member: a character (code point) or a class escape (set)."""
    char = scanner.peek()
    if char == "\\":
        return cast("int | CharSet", parse_escape(scanner, flags, in_class=True))  # anchors only outside
    if scanner.flavor == "python" and has_items and char in "-&~|" and scanner.peek(1) == char:
        raise scanner.error(f"possible set operation {char * 2}: escape the {char} as \\{char}")
    scanner.take()
    return ord(char)


def _atom_set(atom: int | CharSet, flags: Flags) -> CharSet:
    return fold(CharSet.range(atom, atom), flags) if isinstance(atom, int) else atom
