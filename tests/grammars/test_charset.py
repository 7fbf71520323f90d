"""Character sets, Unicode tables, case folding and the UTF-8 lowering (grammars.core.charset, grammars.core.unicode_data)."""

from __future__ import annotations

import random
import re
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grammars.core import byte_regex as rx
from grammars.core import unicode_data
from grammars.core.charset import ANY_CHAR, EMPTY_SET, CharSet, case_fold, unicode_category, utf8_term

#: Code points where UTF-8 lengths, continuation spans or the surrogate gap change.
EDGES = [0, 0x7F, 0x80, 0x7FF, 0x800, 0xFFF, 0x1000, 0xD7FF, 0xE000, 0xFFFF, 0x10000, 0x3FFFF, 0x40000, 0x10FFFF]


def code_point_strategy() -> st.SearchStrategy[int]:
    near_edges = st.sampled_from(EDGES).flatmap(lambda e: st.integers(max(0, e - 3), min(0x10FFFF, e + 3)))
    return st.one_of(near_edges, st.integers(0, 0x10FFFF))


RANGES = st.lists(st.tuples(code_point_strategy(), code_point_strategy()).map(lambda r: (min(r), max(r))), max_size=6)


def is_scalar(code: int) -> bool:
    return not 0xD800 <= code <= 0xDFFF


def count_strings(term: rx.Term, memo: dict[int, int]) -> int:
    """The number of byte strings a finite-language term accepts, by dynamic programming over derivatives."""
    if term is rx.EMPTY:
        return 0
    if term.id not in memo:
        total = 1 if term.nullable else 0
        for bits in rx.derivative_classes(term):
            total += bin(bits).count("1") * count_strings(rx.derivative(term, rx.lowest_byte(bits)), memo)
        memo[term.id] = total
    return memo[term.id]


# ----------------------------------------------------------------------------------------------
# CharSet
# ----------------------------------------------------------------------------------------------


def test_normalization_merges_and_cuts_surrogates() -> None:
    assert CharSet(((5, 9), (1, 3), (4, 4), (8, 12))).ranges == ((1, 12),)
    assert CharSet.range(0xD000, 0xE000).ranges == ((0xD000, 0xD7FF), (0xE000, 0xE000))
    assert CharSet.range(0xD800, 0xDFFF).is_empty and CharSet.of("\ud800").is_empty
    assert CharSet.range(5, 4) == EMPTY_SET
    assert len(ANY_CHAR) == 0x110000 - 0x800
    assert (~EMPTY_SET) == ANY_CHAR and (~ANY_CHAR) == EMPTY_SET
    with pytest.raises(ValueError):
        CharSet.range(0, 0x110000)


def test_membership_and_iteration() -> None:
    digits = CharSet.range(ord("0"), ord("9")) | CharSet.of("_")
    assert "5" in digits and ord("_") in digits and "a" not in digits and 0xD800 not in ANY_CHAR
    assert list(digits) == [(0x30, 0x39), (0x5F, 0x5F)] and len(digits) == 11
    assert not digits.is_empty and bool(digits) and not EMPTY_SET


@settings(max_examples=150, deadline=None)
@given(a=RANGES, b=RANGES)
def test_set_algebra_matches_python_sets(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> None:
    set_a, set_b = CharSet(a), CharSet(b)
    probes = sorted(
        {p for lo, hi in a + b for q in (lo, hi) for p in (q - 1, q, q + 1) if 0 <= p <= 0x10FFFF} | set(EDGES)
    )

    def members(ranges: list[tuple[int, int]]) -> set[int]:
        return {p for p in probes if is_scalar(p) and any(lo <= p <= hi for lo, hi in ranges)}

    in_a, in_b = members(a), members(b)
    scalars = {p for p in probes if is_scalar(p)}
    for result, expected in (
        (set_a | set_b, in_a | in_b),
        (set_a & set_b, in_a & in_b),
        (set_a - set_b, in_a - in_b),
        (~set_a, scalars - in_a),
    ):
        assert {p for p in probes if p in result} == expected
        assert all(
            lo <= hi and (i == 0 or result.ranges[i - 1][1] + 1 < lo) for i, (lo, hi) in enumerate(result.ranges)
        )


# ----------------------------------------------------------------------------------------------
# Unicode tables
# ----------------------------------------------------------------------------------------------


def test_general_categories_match_unicodedata() -> None:
    rng = random.Random(7)
    samples = [rng.randrange(0x110000) for _ in range(3000)] + EDGES + [0x41, 0x61, 0x1C5, 0x2028, 0x3000, 0xE0001]
    lu, letters, separators = unicode_category("Lu"), unicode_category("L"), unicode_category("Separator")
    for code in filter(is_scalar, samples):
        category = unicodedata.category(chr(code))
        assert (code in lu) == (category == "Lu"), hex(code)
        assert (code in letters) == category.startswith("L"), hex(code)
        assert (code in separators) == category.startswith("Z"), hex(code)
    assert unicode_category("Uppercase_Letter") == lu == unicode_category("uppercase letter", loose=True)
    assert unicode_category("LC") == unicode_category("Lu") | unicode_category("Ll") | unicode_category("Lt")
    assert unicode_category("digit") == unicode_category("Nd")
    assert unicode_category("Cs").is_empty


@pytest.mark.parametrize("name", ["Greek", "Lx", "uppercase letter", "L&"])
def test_unknown_categories_raise_key_error(name: str) -> None:
    with pytest.raises(KeyError):
        unicode_category(name)


def test_generated_tables_match_a_fresh_scan() -> None:
    """Drift test for grammars/core/_unicode_tables.py (regenerate with `python -m grammars.core.unicode_data`)."""
    from grammars.core import _unicode_tables

    assert _unicode_tables.UNIDATA_VERSION == unicodedata.unidata_version
    for letter in ("d", "w", "s"):
        assert unicode_data.python_class(letter) == unicode_data.scan_python_class(letter)
    assert _unicode_tables.CASE_FOLD_CLASSES == unicode_data.scan_case_fold_classes()


def test_case_fold_equals_python_ignorecase_for_literals() -> None:
    partners = unicode_data.case_fold_partners()
    rng = random.Random(3)
    cased = sorted(partners)
    for code in rng.sample(cased, 120) + [ord(c) for c in "kKsSiIµßẞǅσςΣ"] + [0x130, 0x131, 0x212A, 0x17F, 0x345]:
        folded = case_fold(CharSet.of(chr(code)))
        literal = re.compile(re.escape(chr(code)), re.IGNORECASE)
        assert {c for c in cased if literal.fullmatch(chr(c))} | {code} == {c for c in cased if c in folded} | {code}
    assert case_fold(CharSet.of("k")) == CharSet.of("k", "K", "\u212a")
    assert case_fold(CharSet.of("k"), ascii_only=True) == CharSet.of("k", "K")
    assert case_fold(CharSet.of("1", "-")) == CharSet.of("1", "-")


# ----------------------------------------------------------------------------------------------
# UTF-8 lowering
# ----------------------------------------------------------------------------------------------

INVALID_UTF8 = [
    b"\xc0\x80",
    b"\xc1\xbf",
    b"\xe0\x80\x80",
    b"\xe0\x9f\xbf",
    b"\xf0\x80\x80\x80",
    b"\xf0\x8f\xbf\xbf",  # overlong
    b"\xed\xa0\x80",
    b"\xed\xbf\xbf",  # surrogates
    b"\xf4\x90\x80\x80",
    b"\xf5\x80\x80\x80",
    b"\xff",
    b"\xfe",  # beyond U+10FFFF, never-used bytes
    b"\x80",
    b"\xbf",
    b"\xc2",
    b"\xe0\xa0",
    b"\xf0\x90\x80",
    b"\xc2\xc2",  # stray / truncated
]


def test_any_char_is_exactly_valid_utf8() -> None:
    term = utf8_term(ANY_CHAR)
    assert count_strings(term, {}) == len(ANY_CHAR)
    for code in EDGES:
        assert rx.matches(term, chr(code).encode())
    for data in INVALID_UTF8:
        assert not rx.matches(term, data), data


@settings(max_examples=120, deadline=None)
@given(ranges=RANGES)
def test_utf8_term_is_exact(ranges: list[tuple[int, int]]) -> None:
    chars = CharSet(ranges)
    term = utf8_term(chars)
    # Count equality plus every probed member accepted and every probed non-member refused.
    assert count_strings(term, {}) == len(chars)
    probes = {p for lo, hi in chars.ranges for p in (lo - 1, lo, (lo + hi) // 2, hi, hi + 1)} | set(EDGES)
    for code in sorted(p for p in probes if 0 <= p <= 0x10FFFF and is_scalar(p)):
        assert rx.matches(term, chr(code).encode()) == (code in chars), hex(code)
    for data in INVALID_UTF8:
        assert not rx.matches(term, data)


def test_utf8_term_of_small_sets_is_checked_exhaustively() -> None:
    chars = CharSet(((0x7E, 0x81), (0x7FE, 0x801), (0xFFFE, 0x10001)))
    term = utf8_term(chars)
    assert count_strings(term, {}) == len(chars) == 12
    assert all(rx.matches(term, chr(c).encode()) for lo, hi in chars for c in range(lo, hi + 1))


def test_utf8_terms_are_compact() -> None:
    def num_nodes(term: rx.Term, seen: set[int]) -> int:
        if term.id in seen:
            return 0
        seen.add(term.id)
        return 1 + sum(num_nodes(a, seen) for a in term.args)

    not_quote = ~CharSet.of('"', "\\")
    assert num_nodes(utf8_term(not_quote), set()) <= 16 * len(not_quote.ranges) + 16
    letters = unicode_category("L")
    assert num_nodes(utf8_term(letters), set()) <= 4 * len(letters.ranges)
    assert utf8_term(EMPTY_SET) is rx.EMPTY
