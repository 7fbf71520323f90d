"""The byte-regex algebra: normalization, derivatives and membership, against Python's `re`."""

import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grammars.core import byte_regex as rx

DIGIT = rx.byte_range(ord("0"), ord("9"))
LOWER = rx.byte_range(ord("a"), ord("z"))


def test_hash_consing_makes_equal_terms_identical():
    assert rx.concat(rx.literal(b"ab"), DIGIT) is rx.concat(rx.literal(b"a"), rx.literal(b"b"), DIGIT)
    assert rx.alt(LOWER, DIGIT) is rx.alt(DIGIT, LOWER, DIGIT)


@pytest.mark.skipif(rx.compiled_derivatives is None, reason="the compiled derivatives are not built")
def test_terms_leave_the_collectors_tracking():
    """Terms hold only older terms, so no reference cycle passes through them: `_intern` takes each
    term and its argument tuple out of the collector's tracking, and full collections skip them."""
    import gc

    word = rx.concat(rx.literal(b"untracked-"), rx.repeat(rx.byte_set(sum(1 << byte for byte in b"xyz")), 1, None))
    term = rx.alt(word, rx.literal(b"other"))
    assert not gc.is_tracked(term) and not gc.is_tracked(term.args)
    assert all(not gc.is_tracked(arg) for arg in term.args)


def test_normalization_of_trivial_terms():
    assert rx.concat(rx.EMPTY, LOWER) is rx.EMPTY
    assert rx.alt() is rx.EMPTY
    assert rx.repeat(LOWER, 3, 2) is rx.EMPTY
    assert rx.repeat(rx.EMPTY, 0, 5) is rx.EPSILON
    assert rx.repeat(LOWER, 1, 1) is LOWER
    assert rx.complement(rx.complement(LOWER)) is LOWER


@pytest.mark.parametrize(
    "term, pattern",
    [
        (rx.repeat(DIGIT, 2, 4), r"[0-9]{2,4}"),
        (rx.concat(rx.star(rx.alt(LOWER, rx.literal(b"-"))), rx.literal(b"!")), r"[a-z-]*!"),
        (rx.repeat(rx.alt(rx.literal(b"ab"), rx.literal(b"a")), 1, 3), r"(ab|a){1,3}"),
        (rx.repeat(rx.optional(LOWER), 2, 3), r"[a-z]?{2,3}".replace("?{2,3}", "{0,3}")),
    ],
)
@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet="ab-!019z", max_size=8))
def test_membership_agrees_with_re(term, pattern, text):
    assert rx.matches(term, text.encode()) == (re.fullmatch(pattern, text) is not None)


def test_counted_repetition_is_not_unrolled():
    term = rx.repeat(LOWER, 0, 100_000)
    assert rx.matches(term, b"a" * 1000)
    before = rx.num_interned()
    rx.matches(term, b"b" * 50)
    assert rx.num_interned() - before < 200  # one new term per consumed byte, not per bound


def test_intersection_and_complement():
    keys = rx.literals([b"name", b"age"])
    other_word = rx.intersect(rx.repeat(LOWER, 1, None), rx.complement(keys))
    assert rx.matches(other_word, b"nam")
    assert rx.matches(other_word, b"ages")
    assert not rx.matches(other_word, b"name")
    assert not rx.matches(other_word, b"")
    assert rx.matches(rx.difference(rx.star(LOWER), keys), b"")


def test_emptiness_is_decided_within_a_budget():
    assert rx.is_empty(rx.EMPTY) is True
    assert rx.is_empty(rx.repeat(LOWER, 1, None)) is False  # plain: no search
    assert rx.is_empty(rx.intersect(rx.literal(b"ab"), rx.literal(b"ba"))) is True
    assert rx.is_empty(rx.difference(rx.star(LOWER), rx.literals([b"", b"a"]))) is False
    # Telling a{2000} from its complement takes more derivatives than the budget allows.
    counted = rx.repeat(rx.literal(b"a"), rx.MAX_EMPTINESS_STATES * 2, rx.MAX_EMPTINESS_STATES * 2)
    assert rx.is_empty(rx.intersect(counted, rx.complement(counted))) is None


def has_a_string(term: rx.Term, max_states: int = 5000) -> bool:
    """A breadth-first search for a nullable derivative, with no shortcut but EMPTY (the test's own)."""
    seen, frontier = {term.id}, [term]
    while frontier:
        current = frontier.pop(0)
        if current.nullable:
            return True
        for byte_class in rx.derivative_classes(current):
            nxt = rx.derivative(current, rx.lowest_byte(byte_class))
            if nxt is not rx.EMPTY and nxt.id not in seen:
                assert len(seen) < max_states, rx.to_pattern(term)
                seen.add(nxt.id)
                frontier.append(nxt)
    return False


def test_terms_inhabited_by_structure_have_a_string():
    """`Term.inhabited` (which `is_empty`, compiled and in Python, answers without a search) is never
    claimed of an empty term: checked by an exhaustive search on random terms with intersections
    and complements, and on the shape of a key where some keys are taken."""
    from tests.grammars.test_compiled_derivatives import random_term

    rng = random.Random(11)
    terms = [random_term(rng, 4) for _ in range(400)]
    inhabited = [term for term in terms if term.inhabited and not term.is_plain and not term.nullable]
    assert len(inhabited) > 20
    for term in inhabited:
        assert has_a_string(term), rx.to_pattern(term)
    string = rx.concat(rx.star(rx.byte_range(97, 122)), rx.literal(b'"'))
    key = rx.tag(3, rx.difference(string, rx.literals([b'name"', b'age"'])))
    assert key.inhabited and rx.is_empty(key) is False
    # Infinite less infinite, and finite less anything, are left to the search.
    assert not rx.difference(string, rx.star(rx.literal(b"a"))).inhabited
    disjoint = rx.intersect(rx.repeat(rx.literal(b"ab"), 1, None), rx.star(rx.literal(b"c")))
    assert not disjoint.inhabited and rx.is_empty(disjoint) is True
    # The complement of an infinite language has the empty string, which the difference lacks.
    words = rx.repeat(LOWER, 1, None)
    covered = rx.difference(words, rx.alt(words, rx.literal(b"0")))
    assert not covered.inhabited and rx.is_empty(covered) is True
    assert not rx.difference(rx.literal(b'name"'), rx.literal(b'name"')).inhabited
    assert rx.is_empty(rx.difference(rx.literal(b'name"'), rx.literal(b'name"'))) is True


def test_literal_trie_of_many_options():
    options = [f"v{i}".encode() for i in range(20_000)]
    term = rx.literals(options)
    assert rx.matches(term, b"v19999") and rx.matches(term, b"v0")
    assert not rx.matches(term, b"v20000") and not rx.matches(term, b"v")


def test_derivative_classes_partition_the_bytes():
    term = rx.alt(rx.tag(1, rx.literal(b"true")), rx.tag(2, rx.repeat(DIGIT, 1, None)))
    classes = rx.derivative_classes(term)
    union = 0
    for cls in classes:
        assert union & cls == 0
        union |= cls
        members = list(rx.iter_bytes(cls))
        assert len({rx.derivative(term, b) for b in members}) == 1
    assert union == rx.ALL_BYTES


def test_tags_survive_derivatives():
    term = rx.alt(rx.tag(1, rx.literal(b"ab")), rx.tag(2, rx.literal(b"ac")))
    after_a = rx.derivative(term, ord("a"))
    assert {t for t, _ in rx.tags_of(after_a)} == {1, 2}
    after_ab = rx.derivative(after_a, ord("b"))
    assert [(t, rest.nullable) for t, rest in rx.tags_of(after_ab)] == [(1, True)]
