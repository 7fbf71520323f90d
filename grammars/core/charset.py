"""Sets of Unicode scalar values, and their exact UTF-8 encoding as byte-level regex terms.

Regex front ends (regex syntax, JSON Schema, Lark terminals) reason about *characters*; the lexer runs
on *bytes*. `CharSet` is the character side: immutable sorted, disjoint, merged inclusive ranges, so
`[^"\\\\]` is two ranges, not a million code points. `utf8_term` is the bridge: it encodes a set as a
union of byte-range sequences (the classic utf8-ranges split: one sequence of byte ranges per
encoded-length class and alignment), factored into a prefix tree with shared tails, so the term has
O(ranges x 4) nodes, accepts exactly the UTF-8 encodings of the set, and never an overlong form, a
surrogate or a byte sequence that is not UTF-8.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from grammars.core import byte_regex as rx
from grammars.core import unicode_data

MAX_CODE_POINT = 0x10FFFF
SURROGATES = (0xD800, 0xDFFF)

Ranges = tuple[tuple[int, int], ...]


def _normalize(ranges: Iterable[tuple[int, int]]) -> Ranges:
    """Sort, merge overlapping and adjacent ranges, and cut out the surrogate block."""
    ranges = tuple(ranges)
    if len(ranges) == 1:  # fast path: most sets built while parsing are one character or range
        lo, hi = ranges[0]
        if 0 <= lo <= hi <= MAX_CODE_POINT and (hi < SURROGATES[0] or lo > SURROGATES[1]):
            return ((lo, hi),)
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if not (0 <= lo and hi <= MAX_CODE_POINT):
            raise ValueError(f"code point range {lo:#x}-{hi:#x} outside 0..{MAX_CODE_POINT:#x}")
        if lo > hi:
            continue
        if merged and merged[-1][1] + 1 >= lo:
            if hi > merged[-1][1]:
                merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    result: list[tuple[int, int]] = []
    for lo, hi in merged:
        if hi < SURROGATES[0] or lo > SURROGATES[1]:
            result.append((lo, hi))
            continue
        if lo < SURROGATES[0]:
            result.append((lo, SURROGATES[0] - 1))
        if hi > SURROGATES[1]:
            result.append((SURROGATES[1] + 1, hi))
    return tuple(result)


@dataclass(frozen=True, slots=True)
class CharSet:
    """An immutable set of Unicode scalar values (surrogates are never members: UTF-8 cannot hold them).

    Build with `CharSet(ranges)`, `CharSet.of(...)` or `CharSet.range(...)`; combine with `| & - ~`.

    Attributes:
        ranges: sorted, disjoint, non-adjacent inclusive `(lo, hi)` code point ranges.

    Raises:
        ValueError: a range bound outside 0..0x10FFFF (a programming error, not user input).
    """

    ranges: Ranges = ()
    _hash: int = field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        ranges = _normalize(self.ranges)
        object.__setattr__(self, "ranges", ranges)
        object.__setattr__(self, "_hash", hash(ranges))  # sets key caches; \w has 700+ ranges

    def __hash__(self) -> int:
        return self._hash

    @classmethod
    def of(cls, *chars: str) -> CharSet:
        """The set of the given single characters (a surrogate character is not a scalar value: dropped)."""
        return cls(tuple((ord(c), ord(c)) for c in chars))

    @classmethod
    def range(cls, lo: int, hi: int) -> CharSet:
        """Every scalar value in [lo, hi] (empty when lo > hi)."""
        return cls(((lo, hi),))

    def union(self, other: CharSet) -> CharSet:
        """Members of either set."""
        return CharSet(self.ranges + other.ranges)

    def intersection(self, other: CharSet) -> CharSet:
        """Members of both sets."""
        out: list[tuple[int, int]] = []
        a, b = self.ranges, other.ranges
        i = j = 0
        while i < len(a) and j < len(b):
            lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
            if lo <= hi:
                out.append((lo, hi))
            if a[i][1] < b[j][1]:
                i += 1
            else:
                j += 1
        return CharSet(tuple(out))

    def complement(self) -> CharSet:
        """Every scalar value (0..0x10FFFF without surrogates) not in this set."""
        gaps: list[tuple[int, int]] = []
        start = 0
        for lo, hi in self.ranges:
            gaps.append((start, lo - 1))
            start = hi + 1
        gaps.append((start, MAX_CODE_POINT))
        return CharSet(tuple(g for g in gaps if g[0] <= g[1]))

    def difference(self, other: CharSet) -> CharSet:
        """Members of this set that are not in `other`."""
        return self.intersection(other.complement())

    __or__ = union
    __and__ = intersection
    __sub__ = difference
    __invert__ = complement

    def __contains__(self, char: int | str) -> bool:
        code = ord(char) if isinstance(char, str) else char
        index = bisect.bisect_right(self.ranges, (code, MAX_CODE_POINT + 1)) - 1
        return index >= 0 and self.ranges[index][0] <= code <= self.ranges[index][1]

    @property
    def is_empty(self) -> bool:
        """Whether the set has no member (a property: `if cs.is_empty:`)."""
        return not self.ranges

    def __len__(self) -> int:
        return sum(hi - lo + 1 for lo, hi in self.ranges)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self.ranges)

    def __repr__(self) -> str:
        shown = ", ".join(f"{lo:#x}" if lo == hi else f"{lo:#x}-{hi:#x}" for lo, hi in self.ranges[:8])
        more = f", ... ({len(self.ranges)} ranges)" if len(self.ranges) > 8 else ""
        return f"CharSet({shown}{more})"


ANY_CHAR = CharSet.range(0, MAX_CODE_POINT)
EMPTY_SET = CharSet()

_LOOSE_CATEGORY_NAMES: dict[str, str] = {}


def _loose(name: str) -> str:
    """Unicode loose matching (UAX44-LM3): ignore case, spaces, underscores and hyphens."""
    return "".join(c for c in name.lower() if c not in " _-")


@functools.cache
def unicode_category(name: str, *, loose: bool = False) -> CharSet:
    """The characters of a Unicode general category: "Lu", a major class "L" (or "LC"), or a long name
    or alias ("Uppercase_Letter", "Letter", "digit").

    Args:
        name: the category name, matched exactly unless `loose`.
        loose: match names as Unicode's loose matching rule does ("uppercase letter" = "Lu"), as the
            Rust and PCRE syntaxes do; ECMAScript requires the exact spelling.

    Raises:
        KeyError: `name` is not a general category.
    """
    if loose:
        if not _LOOSE_CATEGORY_NAMES:
            for key in (*unicode_data.CATEGORY_ALIASES, *unicode_data.CATEGORY_ALIASES.values()):
                _LOOSE_CATEGORY_NAMES[_loose(key)] = unicode_data.CATEGORY_ALIASES.get(key, key)
            for codes in unicode_data.MAJOR_CATEGORIES.values():
                _LOOSE_CATEGORY_NAMES.update((_loose(code), code) for code in codes)
        code = _LOOSE_CATEGORY_NAMES.get(_loose(name))
        if code is None:
            raise KeyError(f"unknown Unicode general category {name!r}")
    else:
        code = unicode_data.CATEGORY_ALIASES.get(name, name)
    try:
        return CharSet(unicode_data.category_ranges(code))
    except KeyError:
        raise KeyError(f"unknown Unicode general category {name!r}") from None


def case_fold(chars: CharSet, *, ascii_only: bool = False) -> CharSet:
    """`chars` plus every character equal to a member under case-insensitive matching.

    The equivalence is the one Python's `re.IGNORECASE` uses (simple lower/upper case mappings closed
    transitively: "k" ~ "K" ~ KELVIN SIGN, "s" ~ "S" ~ LONG S); ECMAScript's `i` flag (simple case
    folding) agrees on all but a handful of characters.

    Args:
        chars: the set to close.
        ascii_only: fold only ASCII letters (Python's `re.ASCII` with `re.IGNORECASE`).
    """
    if ascii_only:
        letters = chars & (CharSet.range(ord("A"), ord("Z")) | CharSet.range(ord("a"), ord("z")))
        return chars | CharSet(tuple((lo ^ 0x20, hi ^ 0x20) for lo, hi in letters))
    partners = unicode_data.case_fold_partners()
    cased = _sorted_cased_code_points()
    extra: list[tuple[int, int]] = []
    for lo, hi in chars.ranges:
        for index in range(bisect.bisect_left(cased, lo), bisect.bisect_right(cased, hi)):
            extra.extend((p, p) for p in partners[cased[index]])
    return chars | CharSet(tuple(extra)) if extra else chars


@functools.cache
def _sorted_cased_code_points() -> list[int]:
    return sorted(unicode_data.case_fold_partners())


# ----------------------------------------------------------------------------------------------
# UTF-8 lowering
# ----------------------------------------------------------------------------------------------

_LENGTH_BOUNDARIES = (0x7F, 0x7FF, 0xFFFF)


def _utf8_sequences(lo: int, hi: int, out: list[tuple[tuple[int, int], ...]]) -> None:
    """Append to `out` byte-range sequences whose products are exactly the encodings of [lo, hi].

    Split first where the encoded length changes, then wherever a continuation position would not
    cover its full 0x80-0xBF span, until each piece is a product of per-position byte ranges.
    """
    for boundary in _LENGTH_BOUNDARIES:
        if lo <= boundary < hi:
            _utf8_sequences(lo, boundary, out)
            _utf8_sequences(boundary + 1, hi, out)
            return
    for num_trailing in (1, 2, 3):
        mask = (1 << (6 * num_trailing)) - 1
        if lo & ~mask != hi & ~mask:
            if lo & mask:
                _utf8_sequences(lo, lo | mask, out)
                _utf8_sequences((lo | mask) + 1, hi, out)
                return
            if hi & mask != mask:
                _utf8_sequences(lo, (hi & ~mask) - 1, out)
                _utf8_sequences(hi & ~mask, hi, out)
                return
    out.append(tuple(zip(chr(lo).encode("utf-8"), chr(hi).encode("utf-8"))))


def _prefix_tree(sequences: list[tuple[tuple[int, int], ...]]) -> rx.Term:
    """The union of byte-range sequences, factored by leading byte range with equal tails merged."""
    by_head: dict[tuple[int, int], list[tuple[tuple[int, int], ...]]] = {}
    for sequence in sequences:
        by_head.setdefault(sequence[0], []).append(sequence[1:])
    bits_by_tail: dict[rx.Term, int] = {}
    for (lo, hi), rests in by_head.items():
        tail = rx.EPSILON if rests[0] == () else _prefix_tree(rests)
        bits_by_tail[tail] = bits_by_tail.get(tail, 0) | ((1 << (hi + 1)) - (1 << lo))
    return rx.alt(*(rx.concat(rx.byte_set(bits), tail) for tail, bits in bits_by_tail.items()))


@functools.lru_cache(maxsize=4096)
def utf8_term(chars: CharSet) -> rx.Term:
    """The byte-level term matching exactly the UTF-8 encodings of the members of `chars` (one character).

    The empty set gives `byte_regex.EMPTY`. Results are cached per set.
    """
    sequences: list[tuple[tuple[int, int], ...]] = []
    for lo, hi in chars.ranges:
        _utf8_sequences(lo, hi, sequences)
    return _prefix_tree(sequences) if sequences else rx.EMPTY
