"""Conformance of `regex_term` (python flavor, fullmatch) against the Rust regex crate's test suite.

Each TOML test gives a pattern, a haystack and the matches Rust's engine reports. We check one question
per test: is the whole haystack in the pattern's language? The expected answer comes from two oracles:

1. Python's `re.fullmatch` (with FutureWarnings as errors), whenever `re` compiles the pattern. Our
   python flavor promises Python's semantics, so this oracle wins whenever it exists.
2. Otherwise (patterns `re` rejects but we accept: `\\p{..}`, `\\pL`, `\\z`), the Rust matches, read
   conservatively: a reported span [0, len] means True; no match at all means False; in the default
   leftmost search, a first match that starts after 0 means False (no match starts at 0). Anything
   else is undetermined and counted, not guessed.

Where both exist and disagree (the engines differ: Rust's `\\w` has marks, its `(?i)` uses simple case
folding, ...) we count the divergence and follow Python.

Skips are decided by our own parser (a GrammarSyntaxError: lookaround, `\\b`, `(?m)` anchors, Rust-only
syntax) or, for test configurations that change what a pattern means, by the config: `unicode = false`
(byte-oriented mode), custom `line-terminator`, regex sets (a list of patterns), and haystacks that are
not UTF-8. Tests marked `compiles = false` must make our parser fail too.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest

from grammars.core import byte_regex as rx
from grammars.errors import GrammarSyntaxError
from grammars.frontends.regex.syntax import regex_term
from tests.shared_data import SHARED

TESTDATA = SHARED / "corpus" / "regex" / "rust-regex" / "testdata"
#: Ratchet: the number of tests that reach a comparison; raise it when support grows.
MIN_COMPARED = 295

pytestmark = pytest.mark.skipif(not TESTDATA.is_dir(), reason=f"corpus not present at {TESTDATA}")


@dataclass
class Case:
    name: str
    pattern: str
    haystack: str
    spans: list[tuple[int, int]]
    config: dict


def _unescape(text: str) -> bytes:
    """The Rust suite's `unescape = true` haystack syntax: \\xNN bytes and \\n \\r \\t \\0 \\\\ escapes."""
    out = bytearray()
    i = 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "x":
                out.append(int(text[i + 2 : i + 4], 16))
                i += 4
                continue
            out += {"n": b"\n", "r": b"\r", "t": b"\t", "0": b"\0", "\\": b"\\"}.get(nxt, ("\\" + nxt).encode())
            i += 2
            continue
        out += text[i].encode()
        i += 1
    return bytes(out)


def _overall_span(match: Any) -> tuple[int, int]:
    """The whole match's span from TOML: `[s, e]`, `[[s, e], groups...]`, `{span}` or `{spans: [...]}`."""
    if isinstance(match, dict):  # {id, span} or, with capture groups, {id, spans: [overall, ...]}
        match = match["span"] if "span" in match else match["spans"][0]
    elif match and isinstance(match[0], list):
        match = match[0]
    start, end = match
    return start, end


def load_cases() -> tuple[list[Case], Counter]:
    """The tests whose configuration we can compare, and counts of the others by reason."""
    cases: list[Case] = []
    skipped: Counter = Counter()
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    for path in sorted(TESTDATA.glob("*.toml")):
        with path.open("rb") as handle:
            tests = tomllib.load(handle)["test"]
        for test in tests:
            name = f"{path.stem}/{test['name']}"
            if isinstance(test["regex"], list):
                skipped["config: regex set"] += 1
            elif test.get("unicode", True) is False:
                skipped["config: unicode = false"] += 1
            elif "line-terminator" in test:
                skipped["config: line-terminator"] += 1
            else:
                raw = _unescape(test["haystack"]) if test.get("unescape") else test["haystack"].encode()
                try:
                    haystack = raw.decode("utf-8")
                except UnicodeDecodeError:
                    skipped["config: haystack not UTF-8"] += 1
                    continue
                spans = [_overall_span(m) for m in test["matches"]]
                cases.append(Case(name, test["regex"], haystack, spans, test))
    return cases, skipped


def python_oracle(case: Case) -> bool | None:
    flags = re.IGNORECASE if case.config.get("case-insensitive") else 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            compiled = re.compile(case.pattern, flags)
        except (re.error, OverflowError, FutureWarning, DeprecationWarning):
            return None
    return compiled.fullmatch(case.haystack) is not None


def rust_oracle(case: Case) -> bool | None:
    length = len(case.haystack.encode())
    if (0, length) in case.spans:
        return True
    if not case.spans and "bounds" not in case.config:
        return False
    is_default_search = not any(k in case.config for k in ("bounds", "search-kind", "match-kind", "anchored"))
    if is_default_search and case.spans and case.spans[0][0] > 0:
        return False
    return None


def test_rust_regex_suite_fullmatch() -> None:
    cases, skipped = load_cases()
    counts: Counter = Counter()
    mismatches: list[str] = []
    for case in cases:
        ignore_case = bool(case.config.get("case-insensitive"))
        try:
            term = regex_term(case.pattern, ignore_case=ignore_case)
        except GrammarSyntaxError as exc:
            if case.config.get("compiles") is False:
                counts["rejected as Rust does (compiles = false)"] += 1
            else:
                skipped["unsupported: " + exc.reason.split(" (")[0][:48]] += 1
            continue
        if case.config.get("compiles") is False:
            mismatches.append(f"{case.name}: {case.pattern!r} accepted, but Rust rejects it")
            continue
        expected_python, expected_rust = python_oracle(case), rust_oracle(case)
        if expected_python is not None and expected_rust is not None and expected_python != expected_rust:
            counts["divergent Rust vs Python (Python followed)"] += 1
        expected = expected_python if expected_python is not None else expected_rust
        if expected is None:
            skipped["undetermined (no oracle)"] += 1
            continue
        counts["compared"] += 1
        counts["oracle: python" if expected_python is not None else "oracle: rust spans"] += 1
        if rx.matches(term, case.haystack.encode()) != expected:
            mismatches.append(f"{case.name}: {case.pattern!r} on {case.haystack!r}: expected {expected}")
    print(f"\nrust-regex suite: {len(cases) + sum(v for k, v in skipped.items() if k.startswith('config'))} tests")
    for key, value in sorted(counts.items()) + sorted(skipped.items()):
        print(f"  {key:<60} {value}")
    assert not mismatches, "\n".join(mismatches)
    assert counts["compared"] >= MIN_COMPARED
