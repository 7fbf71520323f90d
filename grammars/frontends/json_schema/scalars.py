"""Number and string keywords to typed nodes, and the canonical text of literal scalars."""

from __future__ import annotations

import json
from fractions import Fraction
from typing import Protocol

from grammars.core import byte_regex as rx
from grammars.errors import SchemaError
from grammars.frontends.json_schema import numbers, readers
from grammars.frontends.json_schema.nodes import NumT, StrT
from grammars.frontends.json_schema.refs import Dialect, Loc
from grammars.frontends.json_schema.strings import UnsupportedPattern, fullmatch_term, length_term, pattern_term


class Reporter(Protocol):
    """Where a keyword that cannot be enforced is reported (raise, or warn under lenient)."""

    def unsupported(self, keyword: str, loc: Loc, reason: str) -> None: ...


def number_node(schema: dict, loc: Loc, dialect: Dialect, is_integer: bool, reporter: Reporter) -> NumT | None:
    """The numbers (integers when `is_integer`) a schema's numeric keywords admit; None if none.

    Raises:
        SchemaError: a malformed bound or multipleOf.
        UnsupportedSchemaError: a multipleOf beyond the residue-automaton limits (unless lenient).
    """
    lower, upper = _bounds(schema, loc, dialect)
    term, universe = numbers.range_term(lower, upper) if lower or upper else (numbers.FULL, numbers.FULL)
    multiple = readers.number(schema, "multipleOf", loc)
    if multiple is not None:
        if multiple <= 0:
            raise SchemaError(f"multipleOf must be > 0, not {schema['multipleOf']!r}", loc.child("multipleOf").pointer)
        if not (is_integer and multiple.denominator == 1 and multiple == 1):
            try:
                term, universe = rx.intersect(term, numbers.multiple_of_term(multiple)), numbers.PLAIN
            except numbers.UnsupportedNumber as exc:
                reporter.unsupported("multipleOf", loc, str(exc))
    if is_integer:
        term, universe = rx.intersect(term, numbers.INTEGRAL), numbers.PLAIN
    if universe is numbers.PLAIN:
        term = rx.intersect(term, numbers.PLAIN)
    if term is rx.EMPTY:
        return None
    return NumT(term, universe, is_integer)


def _bounds(schema: dict, loc: Loc, dialect: Dialect) -> tuple[numbers.Bound | None, numbers.Bound | None]:
    from grammars.frontends.json_schema.formats import NUMERIC_FORMATS

    lowers: list[numbers.Bound] = []
    uppers: list[numbers.Bound] = []
    format_range = NUMERIC_FORMATS.get(readers.string(schema, "format", loc) or "")
    if format_range is not None:
        lowers.append(numbers.Bound(Fraction(format_range[0]), False))
        uppers.append(numbers.Bound(Fraction(format_range[1]), False))
    for keyword, strict_keyword, found in (
        ("minimum", "exclusiveMinimum", lowers),
        ("maximum", "exclusiveMaximum", uppers),
    ):
        value = readers.number(schema, keyword, loc)
        flag = schema.get(strict_keyword)
        if isinstance(flag, bool):  # draft 4: a boolean that makes the plain bound exclusive
            if value is not None:
                found.append(numbers.Bound(value, flag))
        else:
            if value is not None:
                found.append(numbers.Bound(value, False))
            strict = readers.number(schema, strict_keyword, loc)
            if strict is not None:
                found.append(numbers.Bound(strict, True))
    lower = max(lowers, key=lambda b: (b.value, b.is_strict), default=None)
    upper = min(uppers, key=lambda b: (b.value, not b.is_strict), default=None)
    return lower, upper


def string_node(schema: dict, loc: Loc, reporter: Reporter, format_term) -> StrT | None:
    """The strings a schema's string keywords admit; None if none.

    `format_term(name, loc)` returns the content term of a format (or None when not enforced).

    Raises:
        SchemaError: malformed lengths; UnsupportedSchemaError: a pattern that cannot be enforced.
    """
    terms = []
    min_length = readers.count(schema, "minLength", loc) or 0
    max_length = readers.count(schema, "maxLength", loc)
    if min_length or max_length is not None:
        terms.append(length_term(min_length, max_length))
    pattern = readers.string(schema, "pattern", loc)
    if pattern is not None:
        try:
            terms.append(pattern_term(pattern))
        except UnsupportedPattern as exc:
            reporter.unsupported("pattern", loc, str(exc))
    name = readers.string(schema, "format", loc)
    if name is not None:
        term = format_term(name, loc)
        if term is not None:
            terms.append(term)
    if not terms:
        return StrT()
    term = rx.intersect(*terms)
    return StrT(term) if term is not rx.EMPTY else None


def format_content(name: str, loc: Loc, reporter: Reporter) -> rx.Term | None:
    """The content term of a `format` (formats are asserted); unknown formats are reported."""
    from grammars.frontends.json_schema.formats import (
        DESCRIPTIVE_FORMATS,
        FORMAT_MAX_LENGTHS,
        FORMATS,
        NUMERIC_FORMATS,
        format_regex,
    )

    if name in NUMERIC_FORMATS or name in DESCRIPTIVE_FORMATS:
        return None  # numeric ranges apply to numbers (see `_bounds`); descriptive ones assert nothing
    if name not in FORMATS:
        reporter.unsupported("format", loc, f"unknown format {name!r} (known: {', '.join(sorted(FORMATS))})")
        return None
    try:
        term = fullmatch_term(format_regex(name))
        limit = FORMAT_MAX_LENGTHS.get(name)
        return term if limit is None else rx.intersect(term, length_term(0, limit))
    except UnsupportedPattern as exc:
        reporter.unsupported("format", loc, str(exc))
        return None


def number_literal_texts(value: object) -> list[bytes]:
    """The texts emitted for a literal number: its plain decimal text (integral values as integers),
    and for non-integral floats also `json.dumps`'s spelling (`1e-05`)."""
    if isinstance(value, int):
        return [str(value).encode()]
    exact = numbers.to_fraction(value)
    texts = {numbers.plain_text(exact).encode()}
    if isinstance(value, float) and exact.denominator != 1:
        texts.add(json.dumps(value).encode())
    return sorted(texts)


def string_literal_text(value: str) -> bytes:
    """The canonical text of a literal string (non-ASCII raw, as `json.dumps(ensure_ascii=False)`).

    Raises:
        ValueError: a lone surrogate (no valid UTF-8 text exists).
    """
    return json.dumps(value, ensure_ascii=False).encode("utf-8")
