"""JSON strings as byte terms: every encoding of a character, lengths, `pattern` and `format`.

A string constraint is a term over the *content* of a JSON string (the bytes between the quotes)
that is value-closed: it holds every JSON encoding of each decoded string it admits, raw UTF-8 (where
legal: not a control character, `"` or `\\`), a short escape (`\\n`, `\\/`, ...), `\\uXXXX` in either
hex case, or a surrogate pair for characters beyond the BMP. So `"\\u0041"` matches `^A$`,
intersection and complement are exact, and "any key but the declared ones" can subtract every
spelling of a declared key. Lone surrogate escapes (`"\\ud800"`) are not accepted: they decode to no
Unicode string.

Lengths count code points of the decoded string (an escape or a surrogate pair is one), as counted
repetitions of one encoded character: `maxLength: 100000` is a counter, never unrolled.
"""

from __future__ import annotations

import functools
import json

from grammars.core import byte_regex as rx
from grammars.core.charset import ANY_CHAR, CharSet, utf8_term
from grammars.errors import GrammarSyntaxError
from grammars.frontends.regex.syntax import lower, parse_regex, search_form

_SHORT_ESCAPES = {0x22: b'"', 0x5C: b"\\", 0x2F: b"/", 0x08: b"b", 0x0C: b"f", 0x0A: b"n", 0x0D: b"r", 0x09: b"t"}
#: Characters that may not appear raw inside a JSON string.
_NOT_RAW = CharSet.range(0, 0x1F) | CharSet.of('"', "\\")
_BACKSLASH_U = rx.literal(b"\\u")
_QUOTE = rx.literal(b'"')


class UnsupportedPattern(Exception):
    """A regex (pattern or format) Stencil cannot enforce or parse; carries the reason."""


def _hex_digit(lo: int, hi: int) -> rx.Term:
    """One hex digit with a value in [lo, hi], either letter case."""
    bits = 0
    for value in range(lo, hi + 1):
        for ch in {f"{value:x}", f"{value:X}"}:
            bits |= 1 << ord(ch)
    return rx.byte_set(bits)


def _hex_range(lo: int, hi: int, width: int) -> rx.Term:
    """`width` hex digits (either case) whose value lies in [lo, hi]."""
    if width == 0:
        return rx.EPSILON
    unit = 16 ** (width - 1)
    lo_head, lo_rest = divmod(lo, unit)
    hi_head, hi_rest = divmod(hi, unit)
    any_rest = rx.repeat(_hex_digit(0, 15), width - 1, width - 1)
    if lo_rest == 0 and hi_rest == unit - 1:
        return rx.concat(_hex_digit(lo_head, hi_head), any_rest)
    if lo_head == hi_head:
        return rx.concat(_hex_digit(lo_head, lo_head), _hex_range(lo_rest, hi_rest, width - 1))
    return rx.alt(
        rx.concat(_hex_digit(lo_head, lo_head), _hex_range(lo_rest, unit - 1, width - 1)),
        rx.concat(_hex_digit(lo_head + 1, hi_head - 1), any_rest) if hi_head - lo_head > 1 else rx.EMPTY,
        rx.concat(_hex_digit(hi_head, hi_head), _hex_range(0, hi_rest, width - 1)),
    )


def _u_escapes(lo: int, hi: int) -> rx.Term:
    """`\\uXXXX` escapes of the BMP code points [lo, hi] (no surrogates inside)."""
    return rx.concat(_BACKSLASH_U, _hex_range(lo, hi, 4))


def _surrogate_pairs(lo: int, hi: int) -> rx.Term:
    """`\\uD8XX\\uDCXX` pairs of the supplementary code points [lo, hi]."""
    high_lo, low_lo = divmod(lo - 0x10000, 0x400)
    high_hi, low_hi = divmod(hi - 0x10000, 0x400)

    def pair(high_a: int, high_b: int, low_a: int, low_b: int) -> rx.Term:
        if high_a > high_b:
            return rx.EMPTY
        return rx.concat(_u_escapes(0xD800 + high_a, 0xD800 + high_b), _u_escapes(0xDC00 + low_a, 0xDC00 + low_b))

    if high_lo == high_hi:
        return pair(high_lo, high_lo, low_lo, low_hi)
    return rx.alt(
        pair(high_lo, high_lo, low_lo, 0x3FF),
        pair(high_lo + 1, high_hi - 1, 0, 0x3FF),
        pair(high_hi, high_hi, 0, low_hi),
    )


@functools.lru_cache(maxsize=8192)
def _encode_ranges(ranges: tuple[tuple[int, int], ...]) -> rx.Term:
    chars = CharSet(ranges)
    parts = [utf8_term(chars - _NOT_RAW)]
    for code, letter in _SHORT_ESCAPES.items():
        if code in chars:
            parts.append(rx.literal(b"\\" + letter))
    for lo, hi in chars.ranges:
        if lo <= 0xFFFF:
            parts.append(_u_escapes(lo, min(hi, 0xFFFF)))
        if hi >= 0x10000:
            parts.append(_surrogate_pairs(max(lo, 0x10000), hi))
    return rx.alt(*parts)


def encode_chars(chars: CharSet) -> rx.Term:
    """Every JSON-string encoding of one character of `chars` (the encoder `regex_syntax.lower` takes)."""
    return _encode_ranges(chars.ranges)


#: One character of a JSON string, any encoding.
ANY_CHAR_TERM = encode_chars(ANY_CHAR)
#: Any string content.
ANY_CONTENT = rx.star(ANY_CHAR_TERM)


#: Exactly one encoding of each string: `json.dumps(text, ensure_ascii=False)`'s content (raw UTF-8,
#: short escapes, lowercase `\\u00XX` for other control characters).
CANONICAL_CONTENT = rx.star(
    rx.alt(
        utf8_term(ANY_CHAR - _NOT_RAW),
        *(rx.literal(b"\\" + letter) for letter in _SHORT_ESCAPES.values()),
        *(rx.literal(f"\\u{code:04x}".encode()) for code in range(0x20) if code not in _SHORT_ESCAPES),
    )
)


def content_is_empty(content: rx.Term) -> bool | None:
    """Whether a content term admits no string (None: undecided within `rx.MAX_EMPTINESS_STATES`).

    Content terms hold every encoding of each string they admit, so one encoding per string decides:
    searching the meet with CANONICAL_CONTENT skips the escape spellings, which otherwise multiply
    the states of an intersection or complement many times over.
    """
    return rx.is_empty(content if content.is_plain else rx.intersect(content, CANONICAL_CONTENT))


def length_term(min_length: int, max_length: int | None) -> rx.Term:
    """Contents of strings with between `min_length` and `max_length` code points (a counter)."""
    return rx.repeat(ANY_CHAR_TERM, min_length, max_length)


def is_spellable(text: str) -> bool:
    """Whether some UTF-8 JSON text spells `text` (it holds no lone surrogate)."""
    return not any(0xD800 <= ord(char) <= 0xDFFF for char in text)


class LoneSurrogateError(ValueError):
    """A string holding a lone surrogate (`"\\ud800"`): no UTF-8 JSON text spells it."""


@functools.lru_cache(maxsize=65536)
def _char_encodings(char: str) -> rx.Term:
    if 0xD800 <= ord(char) <= 0xDFFF:
        raise LoneSurrogateError(f"a string holds a lone surrogate U+{ord(char):04X}, which no UTF-8 JSON text spells")
    return encode_chars(CharSet.of(char))


@functools.lru_cache(maxsize=4096)
def value_encodings(text: str) -> rx.Term:
    """Every content encoding of exactly the string `text` (cached like `quoted_term`: property names
    recur).

    Raises:
        LoneSurrogateError: `text` holds a lone surrogate (no JSON encoding decodes to it under our policy).
    """
    return rx.concat(*(_char_encodings(c) for c in text))


@functools.lru_cache(maxsize=1024)
def other_than(names: frozenset[str]) -> rx.Term:
    """Contents of every string except the given ones, in any encoding, as a *plain* term (a trie
    over the names' characters with an escape to "any other character, then anything" at each node),
    so the lexer never has to search a complement for emptiness. Lone-surrogate names are skipped
    (no content decodes to them)."""
    trie: dict = {}
    for name in names:
        if any(0xD800 <= ord(c) <= 0xDFFF for c in name):
            continue
        node = trie
        for char in name:
            node = node.setdefault(char, {})
        node[None] = True
    content = _other_than(trie)
    _remember(_OTHER_THAN_CONTENTS, content, frozenset(filter(is_spellable, names)))
    return content


#: Terms kept by each registry below before it starts afresh (a forgotten term only costs a search).
MAX_REMEMBERED_TERMS = 65536
#: `other_than` contents, and their whole-string lexemes, by term id: the (spellable) names they
#: leave out. Key exclusion (`grammars.core.distinct_keys`) reads which keys such a lexeme holds
#: off the names instead of searching the term.
_OTHER_THAN_CONTENTS: dict[int, frozenset[str]] = {}
_OTHER_THAN_LEXEMES: dict[int, frozenset[str]] = {}


def _remember(registry: dict[int, frozenset[str]], term: rx.Term, names: frozenset[str]) -> None:
    if len(registry) >= MAX_REMEMBERED_TERMS:
        registry.clear()
    registry[term.id] = names


def names_left_out(lexeme: rx.Term) -> frozenset[str] | None:
    """The names a whole-string lexeme of `other_than(names)` leaves out (it holds every spelling of
    every other string), or None when `lexeme` is not known to be one."""
    return _OTHER_THAN_LEXEMES.get(lexeme.id)


def _other_than(node: dict) -> rx.Term:
    children = [c for c in node if c is not None]
    if not children:
        return ANY_CONTENT if None not in node else rx.concat(ANY_CHAR_TERM, ANY_CONTENT)
    parts = [_others_then_anything(frozenset(children))]
    parts += [rx.concat(_char_encodings(c), _other_than(node[c])) for c in children]
    if None not in node:
        parts.append(rx.EPSILON)
    return rx.alt(*parts)


@functools.lru_cache(maxsize=65536)
def canonical_content(text: str) -> bytes:
    """The content bytes `json.dumps(text, ensure_ascii=False)` writes between the quotes."""
    return json.dumps(text, ensure_ascii=False).encode("utf-8", "surrogatepass")[1:-1]


def string_lexeme(content: rx.Term) -> rx.Term:
    """A whole JSON string (quotes included) whose content is in `content`."""
    lexeme = rx.concat(_QUOTE, content, _QUOTE)
    left_out = _OTHER_THAN_CONTENTS.get(content.id)
    if left_out is not None:
        _remember(_OTHER_THAN_LEXEMES, lexeme, left_out)
    return lexeme


@functools.lru_cache(maxsize=4096)
def quoted_term(content: bytes) -> rx.Term:
    """Exactly the JSON string with the (escaped) `content`, quotes included: a declared key. Cached
    like `pattern_term`, since a schema spells the same keys in many objects and alternatives."""
    return rx.literal(b'"' + content + b'"')


@functools.lru_cache(maxsize=4096)
def pattern_term(pattern: str) -> rx.Term:
    """Contents of strings in which the ECMAScript regex `pattern` matches somewhere (JSON Schema's
    unanchored `pattern`), every encoding of each character included.

    Raises:
        UnsupportedPattern: the regex does not parse or uses a construct that is not regular.
    """
    try:
        return lower(search_form(parse_regex(pattern, flavor="ecmascript")), encode_chars)
    except GrammarSyntaxError as exc:
        raise UnsupportedPattern(f"pattern {pattern!r} cannot be enforced: {exc.reason}") from exc


@functools.lru_cache(maxsize=256)
def fullmatch_term(regex: str) -> rx.Term:
    """Contents of strings that the ECMAScript regex matches as a whole (used for formats).

    Raises:
        UnsupportedPattern: the regex does not parse or is not regular.
    """
    try:
        return lower(parse_regex(regex, flavor="ecmascript"), encode_chars)
    except GrammarSyntaxError as exc:
        raise UnsupportedPattern(f"regex {regex!r} cannot be enforced: {exc.reason}") from exc


@functools.lru_cache(maxsize=4096)
def _others_then_anything(chars: frozenset[str]) -> rx.Term:
    """A character outside `chars`, then any content."""
    return rx.concat(encode_chars(ANY_CHAR - CharSet.of(*chars)), ANY_CONTENT)
