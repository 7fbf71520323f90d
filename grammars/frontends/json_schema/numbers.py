"""Numeric keywords as byte terms over JSON number text: exact ranges and `multipleOf` residues.

A number constraint is a term over number *texts* that is *value-closed* within a universe of texts:
two texts of the universe that denote the same value are both in the term or both out. That makes
intersection, union and complement of constraints plain term algebra (`not`, `oneOf`, `if`).
Two universes:

    FULL   every RFC 8259 number: -?(0|[1-9][0-9]*)(\\.[0-9]+)?([eE][+-]?[0-9]+)?
    PLAIN  the same without an exponent

Comparing a text with an exponent to a bound is not regular (the exponent shifts the digits by an
amount written in decimal), so a constraint with a bound other than zero, or a `multipleOf`, lives in
PLAIN: `1e2` is then rejected even where 100 is valid. That restriction is sound (it only rejects).
Bounds at zero (`minimum: 0`, `exclusiveMaximum: 0`, ...) are decided by the sign alone and keep
FULL.

`multipleOf` is a residue automaton over the digits (r' = (10 r + d) mod p) turned into a term,
one per prime-power factor of p (the factors intersected), unrolled by length: at most
MAX_MULTIPLE_INTEGER_DIGITS integer digits (sound: longer multiples are rejected) and the fraction
digits up to the multiple's scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from functools import lru_cache

from grammars.core import byte_regex as rx

#: Largest prime-power factor of a `multipleOf` modulus turned into a residue automaton.
MAX_MODULUS_FACTOR = 256
#: Most integer digits a `multipleOf` number may have (the residue automaton is unrolled by length).
MAX_MULTIPLE_INTEGER_DIGITS = 24
#: Most fraction digits a `multipleOf` may fix (0.000...01 with this many zeros).
MAX_MULTIPLE_SCALE = 40

DIGIT = rx.byte_range(0x30, 0x39)
NONZERO_DIGIT = rx.byte_range(0x31, 0x39)
_DOT = rx.literal(b".")
_MINUS = rx.literal(b"-")
_ZEROS = rx.star(rx.literal(b"0"))
_DIGITS = rx.star(DIGIT)
_DIGITS_PLUS = rx.repeat(DIGIT, 1, None)
_DIGIT_LITERALS = [rx.literal(str(d).encode()) for d in range(10)]

#: Canonical magnitude of an integer: 0 or no leading zero.
INTEGER_MAGNITUDE = rx.alt(rx.literal(b"0"), rx.concat(NONZERO_DIGIT, _DIGITS))
#: An optional fraction, any digits.
ANY_FRACTION = rx.optional(rx.concat(_DOT, _DIGITS_PLUS))
_EXPONENT = rx.concat(rx.byte_set(1 << 0x65 | 1 << 0x45), rx.optional(rx.byte_set(1 << 0x2B | 1 << 0x2D)), _DIGITS_PLUS)
_ANY_EXPONENT = rx.optional(_EXPONENT)
_PLAIN_MAGNITUDE = rx.concat(INTEGER_MAGNITUDE, ANY_FRACTION)
_FULL_MAGNITUDE = rx.concat(_PLAIN_MAGNITUDE, _ANY_EXPONENT)

#: Every JSON number text (the FULL universe).
FULL = rx.concat(rx.optional(_MINUS), _FULL_MAGNITUDE)
#: Every JSON number text without an exponent (the PLAIN universe).
PLAIN = rx.concat(rx.optional(_MINUS), _PLAIN_MAGNITUDE)
#: Canonical integer texts: what an `integer` schema emits.
CANONICAL_INTEGER = rx.concat(rx.optional(_MINUS), INTEGER_MAGNITUDE)
#: PLAIN texts of integral values (`1`, `1.0`, `-0.00`): the value-closed meaning of `type: integer`.
INTEGRAL = rx.concat(
    rx.optional(_MINUS), INTEGER_MAGNITUDE, rx.optional(rx.concat(_DOT, rx.repeat(rx.literal(b"0"), 1, None)))
)


class UnsupportedNumber(Exception):
    """A numeric keyword value this module cannot turn into an exact term (the caller names the keyword)."""


@dataclass(frozen=True)
class Bound:
    """One end of a numeric range: `value`, excluded when `is_strict`."""

    value: Fraction
    is_strict: bool


def to_fraction(value: object) -> Fraction:
    """The exact rational a JSON number denotes (floats through their shortest repr, so 0.1 is 1/10)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal, Fraction)):
        raise TypeError(f"not a number: {value!r}")
    if isinstance(value, float):
        return Fraction(Decimal(repr(value)))
    return Fraction(value)


def plain_text(value: Fraction) -> str:
    """The shortest PLAIN text of a value with a finite decimal expansion (no exponent)."""
    negative = value < 0
    magnitude = -value if negative else value
    scale = 0
    while (magnitude * 10**scale).denominator != 1:
        scale += 1
        if scale > 2000:
            raise ValueError("value has no finite decimal expansion")
    digits = str(int(magnitude * 10**scale)).rjust(scale + 1, "0")
    text = digits if scale == 0 else digits[:-scale] + "." + digits[-scale:]
    return ("-" if negative and magnitude else "") + text


def has_decimal_expansion(value: Fraction) -> bool:
    """Whether `value` is a finite decimal (every JSON number is)."""
    d = value.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    return d == 1


# ----------------------------------------------------------------------------------------------
# Magnitude comparisons
# ----------------------------------------------------------------------------------------------


def _digit_range(lo: int, hi: int) -> rx.Term:
    return rx.byte_range(0x30 + lo, 0x30 + hi) if lo <= hi else rx.EMPTY


def _fixed(count: int) -> rx.Term:
    return rx.repeat(DIGIT, count, count)


def _same_length_range(a: str, b: str) -> rx.Term:
    """Digit strings of len(a) == len(b) between a and b inclusive (lexicographic = numeric)."""
    if not a:
        return rx.EPSILON
    rest = len(a) - 1
    if a[1:] == "0" * rest and b[1:] == "9" * rest:
        return rx.concat(_digit_range(int(a[0]), int(b[0])), _fixed(rest))
    if a[0] == b[0]:
        return rx.concat(_DIGIT_LITERALS[int(a[0])], _same_length_range(a[1:], b[1:]))
    return rx.alt(
        rx.concat(_DIGIT_LITERALS[int(a[0])], _same_length_range(a[1:], "9" * rest)),
        rx.concat(_digit_range(int(a[0]) + 1, int(b[0]) - 1), _fixed(rest)),
        rx.concat(_DIGIT_LITERALS[int(b[0])], _same_length_range("0" * rest, b[1:])),
    )


def integer_range(lo: int, hi: int | None) -> rx.Term:
    """Canonical magnitudes of the integers in [lo, hi] (lo >= 0; hi None: unbounded)."""
    parts = []
    if lo == 0:
        parts.append(rx.literal(b"0"))
        lo = 1
    if hi is not None and hi < lo:
        return rx.alt(*parts)
    lo_len = len(str(lo))
    hi_len = len(str(hi)) if hi is not None else lo_len
    for length in range(lo_len, hi_len + 1):
        a = max(lo, 10 ** (length - 1))
        b = 10**length - 1 if hi is None else min(hi, 10**length - 1)
        if a <= b:
            parts.append(_same_length_range(str(a), str(b)))
    if hi is None:
        parts.append(rx.concat(NONZERO_DIGIT, rx.repeat(DIGIT, lo_len, None)))
    return rx.alt(*parts)


def _split(value: Fraction) -> tuple[int, str]:
    """(integer part, fraction digits without trailing zeros) of a non-negative finite decimal."""
    text = plain_text(value)
    whole, _, fraction = text.partition(".")
    return int(whole), fraction.rstrip("0")


def _digits_at_least(g: str, is_strict: bool) -> rx.Term:
    """Nonempty digit strings F with 0.F >= 0.g (> when strict); g nonempty, no trailing zero."""
    tail = rx.concat(_DIGITS, NONZERO_DIGIT, _DIGITS) if is_strict else _DIGITS
    for index in range(len(g) - 1, -1, -1):
        d = int(g[index])
        tail = rx.alt(rx.concat(_digit_range(d + 1, 9), _DIGITS), rx.concat(rx.literal(g[index].encode()), tail))
    return tail


def _digits_at_most(g: str, is_strict: bool) -> rx.Term:
    """Nonempty digit strings F with 0.F <= 0.g (< when strict); g nonempty, no trailing zero."""
    tail = rx.EMPTY if is_strict else _ZEROS
    for index in range(len(g) - 1, -1, -1):
        d = int(g[index])
        after = tail if index == len(g) - 1 else rx.optional(tail)
        tail = rx.alt(rx.concat(_digit_range(0, d - 1), _DIGITS), rx.concat(rx.literal(g[index].encode()), after))
    return tail


def _fraction_at_least(g: str, is_strict: bool) -> rx.Term:
    """Optional fractions `(.F)?` whose value is >= 0.g (> when strict)."""
    if not g:
        return rx.concat(_DOT, _DIGITS, NONZERO_DIGIT, _DIGITS) if is_strict else ANY_FRACTION
    return rx.concat(_DOT, _digits_at_least(g, is_strict))


def _fraction_at_most(g: str, is_strict: bool) -> rx.Term:
    """Optional fractions `(.F)?` whose value is <= 0.g (< when strict)."""
    if not g:
        return rx.EMPTY if is_strict else rx.optional(rx.concat(_DOT, rx.repeat(rx.literal(b"0"), 1, None)))
    return rx.alt(rx.EPSILON, rx.concat(_DOT, _digits_at_most(g, is_strict)))


def _magnitude_range(lower: Bound | None, upper: Bound | None) -> rx.Term:
    """PLAIN magnitudes (no sign) whose value lies within the bounds."""
    if upper is not None and (upper.value < 0 or (upper.value == 0 and upper.is_strict)):
        return rx.EMPTY
    if lower is not None and (lower.value < 0 or (lower.value == 0 and not lower.is_strict)):
        lower = None
    if lower is None and upper is None:
        return _PLAIN_MAGNITUDE
    if upper is None:
        a, ga = _split(lower.value)  # type: ignore[union-attr]
        return rx.alt(
            rx.concat(integer_range(a + 1, None), ANY_FRACTION),
            rx.concat(rx.literal(str(a).encode()), _fraction_at_least(ga, lower.is_strict)),  # type: ignore[union-attr]
        )
    b, gb = _split(upper.value)
    below_b = rx.concat(rx.literal(str(b).encode()), _fraction_at_most(gb, upper.is_strict))
    if lower is None:
        return rx.alt(rx.concat(integer_range(0, b - 1), ANY_FRACTION) if b > 0 else rx.EMPTY, below_b)
    a, ga = _split(lower.value)
    if a > b:
        return rx.EMPTY
    above_a = _fraction_at_least(ga, lower.is_strict)
    if a == b:
        return rx.concat(rx.literal(str(a).encode()), rx.intersect(above_a, _fraction_at_most(gb, upper.is_strict)))
    middle = rx.concat(integer_range(a + 1, b - 1), ANY_FRACTION) if b - a > 1 else rx.EMPTY
    return rx.alt(rx.concat(rx.literal(str(a).encode()), above_a), middle, below_b)


def _negated(bound: Bound | None) -> Bound | None:
    return None if bound is None else Bound(-bound.value, bound.is_strict)


def _zero_texts(universe_magnitude: rx.Term) -> rx.Term:
    """Magnitudes of the value zero in a universe (`0`, `0.00`, `0e5`)."""
    return rx.intersect(
        universe_magnitude, rx.concat(rx.literal(b"0"), rx.star(rx.byte_set(1 << 0x2E | 1 << 0x30)), _ANY_EXPONENT)
    )


def range_term(lower: Bound | None, upper: Bound | None) -> tuple[rx.Term, rx.Term]:
    """(term, universe): the number texts whose value lies within the bounds, value-closed in the
    universe returned (FULL when the bounds are at zero or absent, PLAIN otherwise)."""
    if all(b is None or b.value == 0 for b in (lower, upper)):
        return _signed_zero_range(lower, upper), FULL
    positive = _magnitude_range(lower, upper)
    negative = _magnitude_range(_negated(upper), _negated(lower))
    return rx.alt(positive, rx.concat(_MINUS, negative)), PLAIN


def _signed_zero_range(lower: Bound | None, upper: Bound | None) -> rx.Term:
    """FULL texts within bounds that are all at zero: decided by the sign and the zero texts."""
    zero = _zero_texts(_FULL_MAGNITUDE)
    non_zero = rx.difference(_FULL_MAGNITUDE, zero)
    allows_zero = not any(b is not None and b.is_strict for b in (lower, upper))
    positive_ok = upper is None
    negative_ok = lower is None
    parts = []
    if positive_ok:
        parts.append(non_zero)
    if negative_ok:
        parts.append(rx.concat(_MINUS, non_zero))
    if allows_zero:
        parts.append(rx.concat(rx.optional(_MINUS), zero))
    return rx.alt(*parts)


def value_texts(value: Fraction) -> rx.Term:
    """Every PLAIN text of exactly `value` (trailing fraction zeros, `-0`): value-closed in PLAIN."""
    text = plain_text(value)
    zeros_tail = rx.star(rx.literal(b"0"))
    if "." in text:
        body = rx.concat(rx.literal(text.encode()), zeros_tail)
    else:
        body = rx.concat(rx.literal(text.encode()), rx.optional(rx.concat(_DOT, rx.repeat(rx.literal(b"0"), 1, None))))
    if value == 0:
        return rx.concat(rx.optional(_MINUS), body)
    return body


# ----------------------------------------------------------------------------------------------
# multipleOf
# ----------------------------------------------------------------------------------------------


def multiple_of_term(multiple: Fraction) -> rx.Term:
    """PLAIN texts of the values that are an integer multiple of `multiple` (> 0).

    Raises:
        UnsupportedNumber: a prime-power factor of the scaled modulus above MAX_MODULUS_FACTOR, or a
            scale above MAX_MULTIPLE_SCALE.
    """
    if multiple <= 0 or not has_decimal_expansion(multiple):
        raise UnsupportedNumber(f"multipleOf {multiple} is not a positive finite decimal")
    scale = 0
    while (multiple * 10**scale).denominator != 1:
        scale += 1
    if scale > MAX_MULTIPLE_SCALE:
        raise UnsupportedNumber(f"multipleOf needs {scale} fraction digits (limit {MAX_MULTIPLE_SCALE})")
    modulus = int(multiple * 10**scale)
    factors = _prime_power_factors(modulus)
    too_big = [f for f in factors if f > MAX_MODULUS_FACTOR]
    if too_big:
        raise UnsupportedNumber(
            f"multipleOf {multiple} needs a residue automaton modulo {too_big[0]} (limit {MAX_MODULUS_FACTOR})"
        )
    scaled_is_integer = rx.concat(INTEGER_MAGNITUDE, rx.optional(rx.concat(_DOT, _scale_fraction(scale))))
    terms = [scaled_is_integer] + [_residue_magnitude(factor, scale) for factor in factors]
    return rx.concat(rx.optional(_MINUS), rx.intersect(*terms))


def _scale_fraction(scale: int) -> rx.Term:
    """Nonempty fraction digits that are all zero after the first `scale`."""
    if scale == 0:
        return rx.repeat(rx.literal(b"0"), 1, None)
    return rx.alt(rx.concat(rx.repeat(DIGIT, 1, scale), _ZEROS), rx.repeat(rx.literal(b"0"), 1, None))


def _prime_power_factors(n: int) -> list[int]:
    factors = []
    p = 2
    while p * p <= n:
        if n % p == 0:
            power = 1
            while n % p == 0:
                n //= p
                power *= p
            factors.append(power)
        p += 1
    if n > 1:
        factors.append(n)
    return factors


@lru_cache(maxsize=256)
def _residue_magnitude(modulus: int, scale: int) -> rx.Term:
    """Magnitudes I(.F)? whose scaled integer I.F[:scale] (zero-padded) is 0 mod `modulus`, with at
    most MAX_MULTIPLE_INTEGER_DIGITS integer digits.

    The integer digits are unrolled by length (a term per (residue, digits left)) rather than closed
    into a star: derivatives of a starred residue automaton are not kept small by hash-consing, while
    the unrolled term's derivatives are exactly its nodes. Digits past `scale` are left to
    `_scale_fraction` (the caller intersects both)."""
    fractions = [_fraction_after(modulus, scale, r) for r in range(modulus)]
    memo: dict[tuple[int, int], rx.Term] = {}

    def digits_then_fraction(r: int, left: int) -> rx.Term:
        key = (r, left)
        if key not in memo:
            options = [fractions[r]]
            if left > 0:
                options += [
                    rx.concat(_DIGIT_LITERALS[d], digits_then_fraction((10 * r + d) % modulus, left - 1))
                    for d in range(10)
                ]
            memo[key] = rx.alt(*options)
        return memo[key]

    first = [rx.concat(rx.literal(b"0"), fractions[0])]
    first += [
        rx.concat(_DIGIT_LITERALS[d], digits_then_fraction(d % modulus, MAX_MULTIPLE_INTEGER_DIGITS - 1))
        for d in range(1, 10)
    ]
    return rx.alt(*first)


def _fraction_after(modulus: int, scale: int, residue: int) -> rx.Term:
    """Optional fractions after an integer part with `residue`, such that the zero-padded scaled
    value is 0 mod `modulus` (digits beyond `scale` unconstrained here)."""
    memo: dict[tuple[int, int], rx.Term] = {}

    def rest(r: int, read: int) -> rx.Term:
        key = (r, read)
        if key not in memo:
            if read == scale:
                memo[key] = _DIGITS if r == 0 else rx.EMPTY
            else:
                can_end = (r * 10 ** (scale - read)) % modulus == 0
                options = [rx.EPSILON] if can_end else []
                options += [rx.concat(_DIGIT_LITERALS[d], rest((10 * r + d) % modulus, read + 1)) for d in range(10)]
                memo[key] = rx.alt(*options)
        return memo[key]

    no_fraction = rx.EPSILON if (residue * 10**scale) % modulus == 0 else rx.EMPTY
    if scale == 0:
        digits = rx.repeat(DIGIT, 1, None) if residue == 0 else rx.EMPTY
    else:
        digits = rx.alt(*(rx.concat(_DIGIT_LITERALS[d], rest((10 * residue + d) % modulus, 1)) for d in range(10)))
    return rx.alt(no_fraction, rx.concat(_DOT, digits) if digits is not rx.EMPTY else rx.EMPTY)
