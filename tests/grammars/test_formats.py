"""JSON Schema `format` regexes (grammars.frontends.json_schema.formats) against the JSON-Schema-Test-Suite and calendar rules."""

from __future__ import annotations

import calendar
import json

import pytest

from grammars.core import byte_regex as rx
from grammars.core.charset import ANY_CHAR, utf8_term
from grammars.frontends.json_schema.formats import FORMAT_MAX_LENGTHS, FORMATS, format_regex
from grammars.frontends.regex.syntax import regex_term
from tests.shared_data import SHARED

FORMAT_TESTS = SHARED / "corpus" / "json-schema-test-suite" / "draft2020-12" / "optional" / "format"


def format_term(name: str) -> rx.Term:
    """The raw-text term of a format, with its length bound (as a JSON Schema front end applies it)."""
    term = regex_term(format_regex(name), flavor="ecmascript")
    max_length = FORMAT_MAX_LENGTHS.get(name)
    return term if max_length is None else rx.intersect(term, rx.repeat(utf8_term(ANY_CHAR), 0, max_length))


def accepts(name: str, text: str) -> bool:
    return rx.matches(format_term(name), text.encode())


@pytest.mark.skipif(not FORMAT_TESTS.is_dir(), reason=f"corpus not present at {FORMAT_TESTS}")
def test_json_schema_test_suite_formats() -> None:
    """Every string instance of every asserted format's suite file, by its `valid` label."""
    mismatches = []
    print()
    for name in sorted(FORMATS - OPENAPI_FORMATS):
        num_cases = num_agreed = 0
        for group in json.loads((FORMAT_TESTS / f"{name}.json").read_text(encoding="utf-8")):
            for case in group["tests"]:
                if not isinstance(case["data"], str):
                    continue  # formats apply to strings only; other types are valid by definition
                num_cases += 1
                if accepts(name, case["data"]) == case["valid"]:
                    num_agreed += 1
                else:
                    mismatches.append(
                        f"{name}: {case['data']!r} should be valid={case['valid']} ({case['description']})"
                    )
        print(f"  format {name:<22} {num_agreed}/{num_cases} agree")
        assert num_cases > 0, name
    assert not mismatches, "\n".join(mismatches)


OPENAPI_FORMATS = frozenset({"byte"})  # no suite file: checked below


def test_openapi_byte_is_padded_base64() -> None:
    for text in ("", "aGk=", "aGVsbG8=", "aGVsbA==", "AAAA+/+/"):
        assert accepts("byte", text), text
    for text in ("a", "aGk", "aGk==", "a=Gk", "aG!k", "aGVsbA=="[:-1]):
        assert not accepts("byte", text), text


def test_unsupported_formats_are_left_out() -> None:
    assert {"idn-hostname", "idn-email", "regex"}.isdisjoint(FORMATS)
    with pytest.raises(KeyError, match="idn-hostname"):
        format_regex("idn-hostname")


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_format_regexes_parse_as_ecmascript(name: str) -> None:
    assert regex_term(format_regex(name), flavor="ecmascript") is not rx.EMPTY


def test_dates_follow_the_gregorian_calendar() -> None:
    term = format_term("date")
    for year in (0, 4, 100, 200, 400, 1900, 1996, 2000, 2023, 2024, 2100, 9996, 9999):
        for month in range(0, 14):
            for day in range(0, 33):
                text = f"{year:04d}-{month:02d}-{day:02d}"
                # calendar's proleptic Gregorian rules; year 0000 is a leap year (divisible by 400)
                is_valid = 1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]
                assert rx.matches(term, text.encode()) == is_valid, text


def test_leap_seconds_only_at_2359_utc() -> None:
    term = format_term("time")
    for offset_hour in range(24):
        for offset_minute in (0, 1, 30, 59):
            offset = offset_hour * 60 + offset_minute
            for sign in (1, -1):
                local = (23 * 60 + 59 + sign * offset) % (24 * 60)
                suffix = f"{'+' if sign > 0 else '-'}{offset_hour:02d}:{offset_minute:02d}"
                for candidate in (local, (local + 1) % 1440, (local + 60) % 1440):
                    text = f"{candidate // 60:02d}:{candidate % 60:02d}:60.5{suffix}"
                    assert rx.matches(term, text.encode()) == (candidate == local), text
    assert accepts("time", "23:59:60Z") and accepts("date-time", "1998-12-31t23:59:60.123z")
    assert not accepts("time", "23:58:60Z")


def test_hostname_length_bound_needs_the_intersection() -> None:
    name = ".".join(["a" * 63] * 4)  # 255 characters, every label valid
    assert rx.matches(regex_term(format_regex("hostname"), flavor="ecmascript"), name.encode())
    assert not accepts("hostname", name)
    assert accepts("hostname", name[:253].rstrip("."))
