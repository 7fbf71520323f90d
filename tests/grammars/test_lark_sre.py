"""Python regexes read by `re`'s own parser and printed back: the printed text means the same."""

import random
import re

import pytest

from grammars.core import byte_regex as rx
from grammars.frontends.lark.sre import has_special, parse_python_regex, unparse
from grammars.frontends.regex.syntax import regex_term

PATTERNS = [
    r"[a-z_][a-z_0-9]*",
    r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?",
    r"[^\"\\\x00-\x1f]|\\[\"\\/bfnrt]",
    r"(?i:ab)c|d{2,3}",
    r"\d+\s*\w|\D\S\W",
    r"[\]\-^]+x",
    r"caf\u00e9|\U0001F600|\t\n ",
    r"a.b",
]
ALPHABET = 'abcdABCD_019 -\\"]^x\u00e9\t\n.\U0001f600'


def fuzz_texts(rng: random.Random, count: int) -> list[str]:
    return ["".join(rng.choice(ALPHABET) for _ in range(rng.randrange(6))) for _ in range(count)]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_printed_regex_has_the_same_language(pattern):
    items, _flags = parse_python_regex(pattern, frozenset())
    printed = unparse(items, fail=ValueError)
    term = regex_term(printed)
    rng = random.Random(pattern)
    texts = fuzz_texts(rng, 400) + ["abc", "x9", "-10.5e3", "ABc", "dd", "1 a", "caf\u00e9", "a\nb", "a-b"]
    mismatches = [t for t in texts if rx.matches(term, t.encode()) != bool(re.fullmatch(pattern, t))]
    assert mismatches == []


def test_global_flags_are_reported_and_applied():
    items, flags = parse_python_regex("(?i)ab", frozenset("s"))
    assert flags & re.IGNORECASE and flags & re.DOTALL
    assert unparse(items, fail=ValueError) == "ab"


@pytest.mark.parametrize(
    "pattern, expected", [("a*?", True), ("(?=a)a", True), ("(?<!a)b", True), ("a*b+", False), ("(a|b)?", False)]
)
def test_special_parts_are_found(pattern, expected):
    items, _flags = parse_python_regex(pattern, frozenset())
    assert has_special(items) is expected
