"""Regex parsing, lowering and search semantics (grammars.frontends.regex.syntax + grammars.frontends.regex.charclass)."""

from __future__ import annotations

import itertools
import json
import re
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grammars.core import byte_regex as rx
from grammars.core.charset import CharSet, utf8_term
from grammars.errors import GrammarError, GrammarSyntaxError
from grammars.frontends.regex.syntax import (
    Alternation,
    CharClass,
    Concat,
    EndAnchor,
    Group,
    Lookahead,
    Lookbehind,
    Repetition,
    StartAnchor,
    WordBoundary,
    lower,
    parse_regex,
    regex_term,
    search_form,
)
from tests.shared_data import SHARED

SUITE = SHARED / "corpus" / "json-schema-test-suite" / "draft2020-12"


def full(pattern: str, text: str, **kwargs: object) -> bool:
    return rx.matches(regex_term(pattern, **kwargs), text.encode())


def lit(text: str) -> CharClass:
    return CharClass(CharSet.of(text))


# ----------------------------------------------------------------------------------------------
# AST
# ----------------------------------------------------------------------------------------------


def test_ast_shapes() -> None:
    assert parse_regex("ab") == Concat((lit("a"), lit("b")))
    assert parse_regex("a|b|") == Alternation((lit("a"), lit("b"), Concat(())))
    assert parse_regex("(?:ab)*?") == Repetition(Group(Concat((lit("a"), lit("b")))), 0, None, is_lazy=True)
    assert parse_regex("a{2}?") == Repetition(lit("a"), 2, 2, is_lazy=True)
    assert parse_regex("a{2,5}") == Repetition(lit("a"), 2, 5)
    assert parse_regex("a{3,}") == Repetition(lit("a"), 3, None)
    assert parse_regex("a{,3}") == Repetition(lit("a"), 0, 3)  # Python: {,n} is 0..n
    assert parse_regex("[a-c]") == CharClass(CharSet.range(ord("a"), ord("c")))
    assert parse_regex("^a$") == Concat((StartAnchor(), lit("a"), EndAnchor(allows_final_newline=True)))
    assert parse_regex("^a$", flavor="ecmascript") == Concat((StartAnchor(), lit("a"), EndAnchor()))
    assert parse_regex("(?P<year>x)(?<day>y)") == Concat((Group(lit("x")), Group(lit("y"))))
    assert parse_regex("") == Concat(())


def test_lookarounds_and_word_boundaries_are_nodes() -> None:
    """The parser reads them (the Lark front end gives them a meaning); the lowering refuses two."""
    assert parse_regex("(?<=a)b") == Concat((Lookbehind(lit("a"), is_negative=False), lit("b")))
    assert parse_regex("(?<!a)b", flavor="ecmascript") == Concat((Lookbehind(lit("a"), is_negative=True), lit("b")))
    assert parse_regex("(?!a$)") == Lookahead(Concat((lit("a"), Repetition(lit("\n"), 0, 1))), is_negative=True)
    ascii_word = CharSet.of("_") | CharSet.range(ord("0"), ord("9")) | CharSet.range(ord("A"), ord("Z"))
    ascii_word |= CharSet.range(ord("a"), ord("z"))
    assert parse_regex("(?a)a\\B") == Concat((lit("a"), WordBoundary(is_negated=True, word=ascii_word)))
    assert parse_regex("\\b", flavor="ecmascript") == WordBoundary(is_negated=False, word=ascii_word)
    boundary = parse_regex("\\b")
    assert isinstance(boundary, WordBoundary) and "\u00e9" in boundary.word
    assert parse_regex("[\\b]") == lit("\b")


def test_counted_repetition_is_a_counter_not_unrolled() -> None:
    term = regex_term("a{1000000}")
    assert term.kind == rx.K_REPEAT and term.lo == term.hi == 1_000_000
    assert regex_term("(a{1,100}){1,100}") is regex_term("a{1,10000}")  # merged: one counter
    nested = regex_term("(ab{1,100}){1,100}")
    assert nested.kind == rx.K_REPEAT and nested.hi == 100 and nested.args[0].args[1].hi == 100


@pytest.mark.parametrize(
    ("pattern", "text", "expected"),
    [
        ("(a{1,100}){1,100}", "a" * 200, True),
        ("(a{1,100}){1,100}", "a" * 200 + "b", False),
        ("(a{1,10}b?){1,10}", "a" * 100, True),
        ("(a{1,10}b?){1,10}", "a" * 101, False),
        ("(a+)+b", "a" * 200, False),
        ("(a+)+b", "a" * 200 + "b", True),
        ("(a|aa)*c", "a" * 200 + "c", True),
        ("((a*)*)*b", "a" * 200, False),
        ("(?:a?){200}a{200}", "a" * 200, True),
        ("(x{2,3}|y{1,50})+z", "xy" * 100 + "z", False),
        ("(x{2,3}|y{1,50})+z", "xx" + "y" * 198 + "z", True),
    ],
)
def test_nested_quantifiers_match_long_inputs(pattern: str, text: str, expected: bool) -> None:
    """Backtracking engines take exponential time on some of these; derivatives must not."""
    assert full(pattern, text) is expected


def test_nested_counted_repetitions_merge_exactly() -> None:
    """`(X{m1,n1}){m2,n2}` is merged into one counter when exact; compare every small case with `re`."""

    def bounds(lo: int, hi: int | None) -> str:
        return f"{{{lo},{'' if hi is None else hi}}}"

    for m1, n1, m2, n2 in itertools.product([0, 1, 2, 3], [None, 0, 1, 3], [0, 1, 2], [None, 0, 1, 3]):
        if (n1 is not None and n1 < m1) or (n2 is not None and n2 < m2):
            continue
        for body in ("a", "ab?"):
            pattern = f"(?:(?:{body}){bounds(m1, n1)}){bounds(m2, n2)}"
            term = regex_term(pattern)
            for text in ["a" * k for k in range(13)] + ["ab" * k for k in range(1, 7)]:
                assert rx.matches(term, text.encode()) == (re.fullmatch(pattern, text) is not None), (pattern, text)


# ----------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------


def test_lookbehind_error_has_offset_and_caret() -> None:
    with pytest.raises(GrammarSyntaxError) as info:
        regex_term("a(?<=b)")
    assert info.value.offset == 1 and (info.value.line, info.value.column) == (1, 2)
    assert "lookbehind" in info.value.reason
    assert info.value.context() == "a(?<=b)\n ^"


@pytest.mark.parametrize(
    "pattern",
    [
        r"^(?!io\.papermc\.)([a-zA-Z_$][a-zA-Z\d_$]*\.)*[a-zA-Z_$][a-zA-Z\d_$]*$",
        r"^(?!\s*$).+",
        r"(?=.*\d)(?=.*[a-z]).{4,}",
        r"a(?=b)\w+",
        r"(?:x(?!y)){2}z",
        r"(?!a$)\w\w?",
        r"(a|b(?=c))c",
    ],
)
@settings(max_examples=60, deadline=None)
@given(text=st.text(alphabet="abcxyz01 .\n_$", max_size=8))
def test_lookaheads_are_exact_intersections(pattern: str, text: str) -> None:
    assert rx.matches(regex_term(pattern, search=True), text.encode()) == (re.search(pattern, text) is not None)
    assert rx.matches(regex_term(pattern), text.encode()) == (re.fullmatch(pattern, text) is not None)


def test_lookahead_inside_a_long_repetition_is_an_error_at_its_offset() -> None:
    with pytest.raises(GrammarSyntaxError, match="lookahead inside a repetition") as info:
        regex_term("(?:a(?=b))*b")
    assert info.value.offset == 4


@pytest.mark.parametrize(
    ("pattern", "offset", "words"),
    [
        ("(ab", 0, "missing )"),
        ("ab)", 2, "unbalanced"),
        ("x[z-a]", 2, "bad character range"),
        ("[ab", 0, "unterminated character set"),
        ("ab\\q", 2, "bad escape"),
        ("a\\", 1, "trailing backslash"),
        ("\\x4", 0, "incomplete escape"),
        ("*a", 0, "nothing to repeat"),
        ("a|+", 2, "nothing to repeat"),
        ("a**", 2, "multiple repeat"),
        ("a{2}{3}", 4, "multiple repeat"),
        ("a{3,2}", 1, "min repeat greater than max"),
        ("^*", 1, "nothing to repeat"),
        ("a(?<=b)", 1, "lookbehind"),
        ("(a)\\1", 3, "backreferences"),
        ("(?P<n>a)(?P=n)", 8, "backreferences"),
        ("a\\bc", 1, "word boundaries"),
        ("a\\B", 1, "word boundaries"),
        ("(?>a)", 0, "atomic"),
        ("a*+", 1, "possessive"),
        ("(a)(?(1)b|c)", 3, "conditional"),
        ("(?m)^a", 4, "multiline anchors"),
        ("a(?i)b", 1, "global flags not at the start"),
        ("(?L)a", 0, "locale"),
        ("\\p{Greek}", 0, "unsupported Unicode property"),
        ("[[:alpha:]]", 1, "nested set"),
        ("[a&&b]", 2, "set operation"),
        ("[\\d-z]", 1, "bad character range"),
        ("\\N{NO SUCH NAME}", 0, "undefined character name"),
        ("\\U00110000", 0, "bad escape"),
        ("[\\777]", 1, "octal escape value"),
        ("(?P<1a>x)", 0, "bad group name"),
        ("(?P<n>a)(?P<n>b)", 8, "redefinition"),
        ("(" * 101 + ")" * 101, 100, "nested deeper"),
    ],
)
def test_syntax_errors_are_located(pattern: str, offset: int, words: str) -> None:
    with pytest.raises(GrammarSyntaxError) as info:
        regex_term(pattern)
    assert words in info.value.reason
    assert info.value.offset == offset
    assert info.value.source == pattern


@pytest.mark.parametrize(
    ("pattern", "offset", "words"),
    [
        ("\\A", 0, "bad escape"),
        ("a\\z", 1, "bad escape"),
        ("(?i)a", 0, "need a scope"),
        ("a\\1", 1, "backreferences"),
        ("\\k<n>", 0, "backreferences"),
        ("\\07", 0, "octal"),
        ("\\u{110000}", 0, "\\u{"),
        ("\\p{Script=Greek}", 0, "unsupported Unicode property"),
        ("\\pL", 0, "braces"),
    ],
)
def test_ecmascript_errors(pattern: str, offset: int, words: str) -> None:
    with pytest.raises(GrammarSyntaxError) as info:
        regex_term(pattern, flavor="ecmascript")
    assert words in info.value.reason and info.value.offset == offset


def test_unknown_flavor_and_bytes_patterns_are_typed_errors() -> None:
    with pytest.raises(GrammarError, match="flavor"):
        parse_regex("a", flavor="perl")
    with pytest.raises(GrammarError, match="str"):
        parse_regex(b"a")


# ----------------------------------------------------------------------------------------------
# Anchors: fullmatch and search
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "yes", "no"),
    [
        ("^abc$", ["abc"], ["abcd", "xabc", "abc\n"]),
        ("^a|b$", ["a", "b"], ["ab", ""]),
        ("(^a)?b", ["ab", "b"], ["a"]),
        ("(a|^)b", ["ab", "b"], ["aab"]),
        ("\\Aa\\Z", ["a"], ["a\n"]),
        ("(?:)^a$(?:)", ["a"], ["aa"]),
        ("^$", [""], ["a"]),
    ],
)
def test_anchors_are_noops_under_fullmatch(pattern: str, yes: list[str], no: list[str]) -> None:
    for text in yes:
        assert full(pattern, text), text
        assert re.fullmatch(pattern, text)
    for text in no:
        assert not full(pattern, text), text
        assert not re.fullmatch(pattern, text)


@pytest.mark.parametrize("pattern", ["a^b", "a$b", "(^a)+", "(a$)*b", "a*^b"])
def test_anchors_in_the_middle_are_refused(pattern: str) -> None:
    with pytest.raises(GrammarSyntaxError) as info:
        regex_term(pattern)
    assert info.value.offset == pattern.index("^" if "^" in pattern else "$")
    with pytest.raises(GrammarSyntaxError):
        regex_term(pattern, search=True)


@pytest.mark.parametrize(
    "pattern",
    [
        "",
        "a",
        "^a",
        "a$",
        "^a$",
        "^a|b$",
        "(^a)",
        "^(a|b)$",
        "(a|b$)",
        "(?:a$)",
        "(^a|b)c",
        "x(a|b$)",
        "(^a)?b",
        "((^a))|c",
        "^",
        "$",
        "^$",
        "a|",
        "^(?:)$",
        "^^a",
        "a$$",
        "^(?:^|b)a",
        "(?:^|b)a",
    ],
)
def test_search_form_agrees_with_ecmascript_search(pattern: str) -> None:
    """ECMAScript `$` (no m flag) is end of input: Python's `\\Z`, so `re.search` with `$` -> `\\Z` is the oracle."""
    node = search_form(parse_regex(pattern, flavor="ecmascript"))
    assert "Anchor" not in repr(node)
    term = lower(node, utf8_term)
    oracle = re.compile(pattern.replace("$", r"\Z"))
    for text in ["", "a", "b", "c", "ab", "ba", "xa", "ax", "bc", "abc", "xbcx", "a\n", "x\nb", "aab", "bb"]:
        assert rx.matches(term, text.encode()) == (oracle.search(text) is not None), (pattern, text)


def test_python_dollar_in_search_allows_a_final_newline() -> None:
    for text in ["a", "xa", "a\n", "a\n\n", "ab"]:
        assert full("a$", text, search=True) == (re.search("a$", text) is not None), text
        assert full("a\\Z", text, search=True) == (re.search("a\\Z", text) is not None), text


def test_ecmascript_pattern_suite() -> None:
    """JSON-Schema-Test-Suite optional ecmascript-regex.json / non-bmp-regex.json `pattern` cases."""
    if not SUITE.is_dir():
        pytest.skip(f"corpus not present at {SUITE}")
    num_checked = 0
    for name in ("ecmascript-regex.json", "non-bmp-regex.json"):
        for group in json.loads((SUITE / "optional" / name).read_text(encoding="utf-8")):
            pattern = group["schema"].get("pattern")
            if pattern is None:
                continue
            term = regex_term(pattern, flavor="ecmascript", search=True)
            for case in group["tests"]:
                if isinstance(case["data"], str):
                    assert rx.matches(term, case["data"].encode()) == case["valid"], (pattern, case["description"])
                    num_checked += 1
    assert num_checked >= 35


# ----------------------------------------------------------------------------------------------
# Flavors and escapes
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "text", "python", "ecmascript"),
    [
        (".", "\r", True, False),
        (".", "\u2028", True, False),
        (".", "\n", False, False),
        ("\\d", "\u0661", True, False),
        ("\\w", "é", True, False),
        ("\\s", "\u0085", True, False),
        ("\\s", "\ufeff", False, True),
        ("\\s", "\x1c", True, False),
        ("a{,2}", "a{,2}", False, True),
        ("a{,2}", "aa", True, False),
        ("x{", "x{", True, True),
        ("x{a}", "x{a}", True, True),
        ("a]}", "a]}", True, True),
        ("[]a]", "a", True, False),
        ("[]a]", "]", True, False),
        ("[]a]", "a]", False, False),
        ("[^]a]", "xa]", False, True),
        ("[\\w-.]", "-", None, True),
        ("\\-\\/\\:", "-/:", True, True),
        ("\\u00e9", "é", True, True),
        ("\\x41\\101\\0", "AA\0", True, None),
        ("\\0", "\0", True, True),
        ("\\p{Lu}\\pL", "ÀB", True, None),
        ("\\p{Lu}\\p{L}", "ÀB", True, True),
        ("\\p{Uppercase_Letter}\\P{L}", "À1", True, True),
        ("\\p{gc=Nd}", "\u0661", True, True),
        ("\\p{ASCII}+", "a~\x7f", True, True),
    ],
)
def test_flavor_differences(pattern: str, text: str, python: bool | None, ecmascript: bool | None) -> None:
    """None: the flavor refuses the pattern."""
    for flavor, expected in (("python", python), ("ecmascript", ecmascript)):
        if expected is None:
            with pytest.raises(GrammarSyntaxError):
                regex_term(pattern, flavor=flavor)
        else:
            assert full(pattern, text, flavor=flavor) is expected, flavor


def test_ecmascript_space_is_whitespace_and_line_terminators() -> None:
    from grammars.core.charset import unicode_category
    from grammars.frontends.regex.charclass import ECMASCRIPT_SPACE

    expected = unicode_category("Zs") | CharSet.of("\t", "\n", "\v", "\f", "\r", "\ufeff", "\u2028", "\u2029")
    assert ECMASCRIPT_SPACE == expected


def test_lower_uses_the_given_encoder() -> None:
    """Front ends lower the same AST into other encodings (JSON Schema: JSON-string escapes)."""

    def escaped(chars: CharSet) -> rx.Term:  # each character also as \uXXXX (BMP only, for the test)
        forms = [utf8_term(chars)] + [
            rx.literal(f"\\u{c:04x}".encode()) for lo, hi in chars for c in range(lo, min(hi, 0xFF) + 1)
        ]
        return rx.alt(*forms)

    term = lower(parse_regex("a[bc]$", flavor="ecmascript"), escaped)
    for text, expected in [("ab", True), ("\\u0061c", True), ("a\\u0063", True), ("\\u0061\\u0064", False)]:
        assert rx.matches(term, text.encode()) is expected, text


def test_ecmascript_unicode_escapes() -> None:
    assert full("\\u{1F600}", "😀", flavor="ecmascript")
    assert full("\\uD83D\\uDE00", "😀", flavor="ecmascript")
    assert full("[\\uD83D\\uDE00-\\uD83D\\uDE02]+", "😀😂", flavor="ecmascript")
    assert full("\\cJ\\cj", "\n\n", flavor="ecmascript")
    assert not full("\\ud83d", "😀", flavor="ecmascript")  # a lone surrogate matches no UTF-8 text


def test_empty_class_matches_nothing() -> None:
    # (hypothesis cannot draw from an empty class, so this one is checked by hand)
    assert full("[^\\s\\S]?x", "x") and not full("[^\\s\\S]?x", "ax") and not full("[^\\s\\S]", "")


def test_python_escapes_and_flags() -> None:
    assert full("\\N{EM DASH}\\U0001F600\\a", "—😀\x07")
    assert full("(?x) a + \\  b  # comment\n c", "aa bc")
    assert full("(?i)straße", "STRASSE") is (re.fullmatch("(?i)straße", "STRASSE") is not None)
    assert full("(?i)k", "\u212a") and not full("(?ai)k", "\u212a")
    assert full("(?a)\\w+", "abc") and not full("(?a)\\w", "é")
    assert full("a(?i:b)c", "aBc") and not full("a(?i:b)c", "aBC")
    assert full("(?s:.)(?-s:.)", "\na") and not full("(?s:.)(?-s:.)", "a\n")
    assert full("(?#a comment)x", "x")
    assert full("a.c", "a\nc", dotall=True) and full("ABC", "abc", ignore_case=True)


# ----------------------------------------------------------------------------------------------
# Property: python flavor == re.fullmatch
# ----------------------------------------------------------------------------------------------

PATTERNS = [
    "abc",
    "a|b|cd",
    "a*b+c?",
    "(ab|a)(c|bcd)(d*)",
    "[a-fA-F0-9]{2,4}",
    "[^a-z]+",
    "x{2}y{0,3}z{1,}",
    "(a|b)*abb",
    "(?:a{1,3}b?){2,3}",
    "\\d+(\\.\\d+)?",
    "\\w+@\\w+",
    "\\s*\\S+\\s*",
    "[\\w.-]+",
    "[^\\W\\d]+",
    ".*",
    ".+a.",
    "(?s).{2}",
    "(?i)[a-z]+k",
    "(?i)ǅ|σ",
    "(?i)[^k]s",
    "[α-ω]+",
    "[\\u00e0-\\u00ff]*é",
    "é|😀+|\\U0001F600{2}",
    "[^\\n]*\n",
    "(?a)\\w\\d\\s",
    "^a(b|c)*$",
    "\\A(x|y){3}\\Z",
    "(?x) a b # c",
    "[\\x00-\\x7f]+[^\\x00-\\x7f]",
    "[\\x80-\\u07ff\\U00010000-\\U000100ff]{2}",
    "(|a)+",
    "(a?)*?b",
    "[-a]|[a-]|[\\]]",
    "\\.\\*\\+\\?\\(\\)\\[\\]\\{\\}",
    "\\D\\W\\S",
    "a{0}b",
    "(?:a|b){0,0}c",
    "[٠-٩]+|\\d\\d",
]
INTERESTING = "abcdkKsSxyzé😀σΣς ǅǄǆ\n\t_.-0159٠\u212a\u017f\xa0\u2028\x85ABC@"
TEXT = st.text(
    alphabet=st.one_of(st.sampled_from(INTERESTING), st.characters(blacklist_categories=["Cs"])),
    max_size=10,
)


def _is_utf8_encodable(text: str) -> bool:
    return not any(0xD800 <= ord(c) <= 0xDFFF for c in text)


@pytest.mark.parametrize("pattern", PATTERNS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_python_flavor_agrees_with_re_fullmatch(pattern: str, data: st.DataObject) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compiled = re.compile(pattern)
    term = regex_term(pattern)
    positive = data.draw(st.from_regex(compiled, fullmatch=True).filter(_is_utf8_encodable))
    assert rx.matches(term, positive.encode()) == (compiled.fullmatch(positive) is not None), positive
    text = data.draw(TEXT)
    assert rx.matches(term, text.encode()) == (compiled.fullmatch(text) is not None), text
