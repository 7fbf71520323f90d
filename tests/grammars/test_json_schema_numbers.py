"""Numeric ranges and multipleOf as terms over JSON number text, checked against exact arithmetic."""

import random
from decimal import Decimal
from fractions import Fraction

import pytest

from grammars.core import byte_regex as rx
from grammars.frontends.json_schema import numbers
from grammars.frontends.json_schema.numbers import Bound


def _texts(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    texts = ["0", "-0", "0.0", "-0.00", "1", "1.0", "1.50", "-1", "10", "99", "100", "-100", "12.5", "999.999"]
    for _ in range(count):
        whole = rng.choice(["0", str(rng.randint(1, 9)), str(rng.randint(10, 999)), str(rng.randint(1000, 10**8))])
        fraction = rng.choice(
            ["", "." + "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 4))), ".0", ".5"]
        )
        texts.append(rng.choice(["", "-"]) + whole + fraction)
    return texts


TEXTS = _texts(7, 300)
BOUNDS = [None] + [Fraction(x) for x in ("0", "1", "-1", "5/2", "-5/2", "10", "100", "999", "1/100", "-1/1000", "12")]


@pytest.mark.parametrize("lower", BOUNDS)
@pytest.mark.parametrize("upper", BOUNDS)
def test_range_terms_agree_with_arithmetic(lower, upper):
    for lower_strict in (False, True):
        for upper_strict in (False, True):
            low = None if lower is None else Bound(lower, lower_strict)
            high = None if upper is None else Bound(upper, upper_strict)
            term, _ = numbers.range_term(low, high)
            for text in TEXTS:
                value = Fraction(Decimal(text))
                expected = (low is None or (value > low.value if lower_strict else value >= low.value)) and (
                    high is None or (value < high.value if upper_strict else value <= high.value)
                )
                assert rx.matches(term, text.encode()) == expected, (low, high, text)


@pytest.mark.parametrize("multiple", ["2", "3", "7", "3/2", "1/100", "11", "24", "5/2", "1/10000", "27/4", "37", "16"])
def test_multiple_of_terms_agree_with_arithmetic(multiple):
    step = Fraction(multiple)
    term = numbers.multiple_of_term(step)
    for text in TEXTS:
        assert rx.matches(term, text.encode()) == ((Fraction(Decimal(text)) / step).denominator == 1), text


def test_zero_bounds_keep_exponents_and_other_bounds_reject_them():
    at_least_zero, universe = numbers.range_term(Bound(Fraction(0), False), None)
    assert universe is numbers.FULL
    assert rx.matches(at_least_zero, b"1e5") and rx.matches(at_least_zero, b"-0e3")
    assert not rx.matches(at_least_zero, b"-2e3")
    positive, _ = numbers.range_term(Bound(Fraction(0), True), None)
    assert not rx.matches(positive, b"0.0e1") and rx.matches(positive, b"1.5E+3")
    at_least_one, universe = numbers.range_term(Bound(Fraction(1), False), None)
    assert universe is numbers.PLAIN and not rx.matches(at_least_one, b"1e5")


def test_large_or_deep_multiples_are_refused():
    with pytest.raises(numbers.UnsupportedNumber, match="modulo"):
        numbers.multiple_of_term(Fraction(123456789, 10**9))
    with pytest.raises(numbers.UnsupportedNumber, match="fraction digits"):
        numbers.multiple_of_term(Fraction(1, 10**60))


def test_multiples_longer_than_the_unrolled_digits_are_rejected_soundly():
    term = numbers.multiple_of_term(Fraction(3))
    assert rx.matches(term, b"3" * numbers.MAX_MULTIPLE_INTEGER_DIGITS)
    assert not rx.matches(term, b"3" * (numbers.MAX_MULTIPLE_INTEGER_DIGITS + 3))


def test_value_texts_cover_every_plain_spelling():
    term = numbers.value_texts(Fraction(3, 2))
    assert all(rx.matches(term, t) for t in (b"1.5", b"1.50", b"1.500"))
    assert not rx.matches(term, b"1.51")
    zero = numbers.value_texts(Fraction(0))
    assert all(rx.matches(zero, t) for t in (b"0", b"-0", b"0.0", b"-0.000"))


def test_plain_text_is_exact_for_floats():
    assert numbers.plain_text(numbers.to_fraction(0.1)) == "0.1"
    assert numbers.plain_text(numbers.to_fraction(1e-05)) == "0.00001"
    assert numbers.plain_text(numbers.to_fraction(-2.50)) == "-2.5"
    assert numbers.plain_text(numbers.to_fraction(3.0)) == "3"
