"""Lark terminals as byte terms: lazy quantifiers and lookarounds keep the meaning `re` gives them."""

import random
import re

import pytest

from grammars.core import byte_regex as rx
from grammars.core import ir
from grammars.errors import EmptyLanguageError, GrammarSyntaxError
from grammars.frontends.lark.grammar import lark_grammar


def terminal(definition: str, imports: str = "") -> rx.Term:
    """The term of terminal T defined as `definition` (the grammar's start rule is just T)."""
    start = lark_grammar(f"start: T\nT: {definition}\n{imports}").rules["start"]
    assert isinstance(start, ir.Lexeme)
    return start.term


def python_tokens(pattern: str, texts: list[str], flags: int = 0) -> set[str]:
    """What Lark's `re.match` takes as the token at the start of each text."""
    found = set()
    for text in texts:
        match = re.compile(pattern, flags).match(text)
        if match:
            found.add(match.group(0))
    return found


def test_common_escaped_string_ends_at_the_first_unescaped_quote():
    term = terminal("ESCAPED_STRING", "%import common.ESCAPED_STRING\n")
    accepted = ['""', '"a"', r'"a\"b"', r'"a\\"', r'"\\\"x"', '"caf\u00e9"']
    rejected = ['"a"b"', r'"a\"', r'"a\\\"', '"a" "b"', '"\n"']
    assert [s for s in accepted if not rx.matches(term, s.encode())] == []
    assert [s for s in rejected if rx.matches(term, s.encode())] == []


def test_lazy_tokens_are_the_ones_re_matches():
    pattern = r'"(?:.*?)(?<!\\)(\\\\)*?"'  # Lark's ESCAPED_STRING as one regex
    texts = ['"a" "b"', r'"a\"b" x"', r'"\\" "', '"" ""', r'"a\\\"b"c"']
    term = terminal(f"/{pattern}/")
    for token in python_tokens(pattern, texts):
        assert rx.matches(term, token.encode()), token
    for text in texts:
        assert not rx.matches(term, text.encode()) or text in python_tokens(pattern, [text])


def test_c_comment_stops_at_the_first_close():
    term = terminal('"/*" /(.|\\n)*?/ "*/"')
    assert rx.matches(term, b"/* a\n **/")
    assert rx.matches(term, b"/**/")
    assert not rx.matches(term, b"/* a */ b */")


@pytest.mark.parametrize(
    ("pattern", "texts"),
    [
        (r"\/\*.*?\*\/", ["/* a * b */", "/** doc */", "/* a */ */", "/* a */"]),  # a tail of several items
        (r"#.*?\n+", ["#a\n\n", "#a\n\nb"]),  # a greedy tail
        (r"'.*?'x", ["'a'b'x", "'a'x'x"]),  # a tail that can fail where it starts
        (r"<.{0,3}?>>", ["<a>>", "<a>b>>", "<>>>>"]),  # bounded
    ],
)
def test_lazy_repetition_stops_where_all_the_rest_matches(pattern: str, texts: list[str]):
    term = terminal(f"/{pattern}/s")
    for text in texts:
        match = re.compile(pattern, re.S).match(text)
        assert rx.matches(term, text.encode()) == (match is not None and match.end() == len(text)), text


def test_a_lookahead_checks_exactly_where_the_rest_starts():
    with pytest.raises(EmptyLanguageError):  # `re` matches nothing either: the y must be read twice
        terminal("/y?(?=y)[ab]/")
    term = terminal("/x+(?!ab)[a-z]+/")
    assert rx.matches(term, b"xac") and not rx.matches(term, b"xab")


def test_lazy_quantifier_followed_by_an_optional_tail():
    # llguidance's lark.lark: STRING: _STRING "i"?  with  _STRING: "\"" /.*?/ "\""
    term = terminal('"\\"" /.*?/ "\\"" "i"?')
    assert rx.matches(term, b'"a"') and rx.matches(term, b'"a"i')
    assert not rx.matches(term, b'"a"b"') and not rx.matches(term, b'"a"i"')


def test_escape_loop_keeps_its_plain_language():
    # Lark's REGEXP: the loop body is not prefix-free, re's choice is "escapes first"
    term = terminal(r"/\/(\\\/|\\\\|[^\/])*?\/[imslux]*/")
    assert rx.matches(term, rb"/a\/b/i")
    assert rx.matches(term, rb"/\\/")
    assert not rx.matches(term, rb"/a/ /b/")


def test_lazy_quantifier_at_the_end_matches_the_fewest():
    term = terminal("/ab+?/")
    assert rx.matches(term, b"ab") and not rx.matches(term, b"abb")


def test_python_string_literal_from_lark_grammars():
    definition = r"""/([ubf]?r?|r[ubf])("(?!"").*?(?<!\\)(\\\\)*?"|'(?!'').*?(?<!\\)(\\\\)*?')/i"""
    term = terminal(definition)
    accepted = ['"a"', "'a'", 'rb"x"', 'F"a\\"b"', "'it\\'s'", '"a\\\\"']
    rejected = ['"a" "b"', '"""a"""', "'a", '"a\\"']
    assert [s for s in accepted if not rx.matches(term, s.encode())] == []
    assert [s for s in rejected if rx.matches(term, s.encode())] == []


def test_keyword_exclusion_idiom():
    term = terminal(r"/(?!(if|else)\b)[a-z_]\w*/")
    assert [s for s in ["x", "iff", "elsewhere", "_if"] if not rx.matches(term, s.encode())] == []
    assert [s for s in ["if", "else"] if rx.matches(term, s.encode())] == []


def test_lookarounds_inside_a_terminal():
    assert rx.matches(terminal(r"/a(?=b)b/"), b"ab")
    assert not rx.matches(terminal(r"/a(?!b)[a-z]/"), b"ab") and rx.matches(terminal(r"/a(?!b)[a-z]/"), b"ac")
    assert rx.matches(terminal(r"/[a-z](?<!a)b/"), b"cb") and not rx.matches(terminal(r"/[a-z](?<!a)b/"), b"ab")
    assert rx.matches(terminal(r"/[a-z](?<=a)b/"), b"ab") and not rx.matches(terminal(r"/[a-z](?<=a)b/"), b"cb")


def test_lookahead_before_a_lazy_loop():
    # C comment without lazy quantifier: "*" not followed by "/" inside the loop is refused (the
    # lookahead would read the next iteration), the lazy form works
    with pytest.raises(GrammarSyntaxError, match="lookahead at the end of a group"):
        terminal(r"/\/\*(\*(?!\/)|[^*])*\*\//")


@pytest.mark.parametrize(
    "definition, reason",
    [
        (r"/a(?=b)/", "lookahead at the end of a terminal"),
        (r"/(?<!a)b/", "lookbehind at the start of a terminal"),
        (r"/(a.*?|c)b/", "lazy quantifier at the end of a group"),
        (r"/a(?=b(?=c))bc/", "lookaround containing a lookaround"),
        (r"/(a)\1/", "backreference"),
        (r"/(?>ab)/", "atomic group|unknown extension"),  # the latter before Python 3.11
        (r"/a*+/", "possessive quantifier|multiple repeat"),
        (r"/a/l", "LOCALE flag"),
    ],
)
def test_refused_constructs_are_located(definition, reason):
    with pytest.raises(GrammarSyntaxError, match=reason) as caught:
        terminal(definition)
    assert (caught.value.line, caught.value.column) == (2, 4)


ORACLE_ALPHABET = 'abcxyifABC_019 -\\".]^\u00e9\t\n#'


@pytest.mark.parametrize(
    ("definition", "pattern", "flags"),
    [
        (r"/[a-z_][a-z_0-9]*/", r"[a-z_][a-z_0-9]*", 0),
        (r"/-?(0|[1-9][0-9]*)(\.[0-9]+)?/", r"-?(0|[1-9][0-9]*)(\.[0-9]+)?", 0),
        (r"/[^\"\\\x00-\x1f]|\\[\"\\\/bfnrt]/", r"[^\"\\\x00-\x1f]|\\[\"\\/bfnrt]", 0),
        (r"/(?i:ab)c|x{2,3}/", r"(?i:ab)c|x{2,3}", 0),
        (r"/\d+\s*\w|\D\S\W/", r"\d+\s*\w|\D\S\W", 0),
        (r"/[\]\-^]+x/", r"[\]\-^]+x", 0),
        (r"/ab|c\u00e9/i", r"ab|c\u00e9", re.I),
        (r"/a.b/s", r"a.b", re.S),
        (r"/a.b/m", r"a.b", re.M),
        (r"/a b # then c\n c/x", "a b # then c\n c", re.X),
        (r"/(?a)\w+/", r"(?a)\w+", 0),
        (r"/(?!(if|else)\b)[a-z_]\w*/", r"(?!(if|else)\b)[a-z_]\w*", 0),
        (r"/x(?=y\b)\w+/", r"x(?=y\b)\w+", 0),
        (r"/(?a)x(?=\w\b)\S+/", r"(?a)x(?=\w\b)\S+", 0),
        (r"/a(?=b\b\s)\w+\s\w/", r"a(?=b\b\s)\w+\s\w", 0),
    ],
)
def test_regex_terminals_match_what_re_fullmatches(definition: str, pattern: str, flags: int):
    """Without lazy parts or lookarounds that read past the terminal, `re.fullmatch` is the oracle."""
    term = terminal(definition)
    rng = random.Random(pattern)
    texts = ["".join(rng.choice(ORACLE_ALPHABET) for _ in range(rng.randrange(7))) for _ in range(500)]
    texts += ["if", "iff", "else", "x_", "xy", "xyz", "xy.", "x1\u00e9", "xa\u00e9", "ab c", "ab\tc", "abc d"]
    mismatches = [t for t in texts if rx.matches(term, t.encode()) != bool(re.fullmatch(pattern, t, flags))]
    assert mismatches == []


def test_regex_errors_are_stencils_own_and_name_the_terminal_line():
    with pytest.raises(GrammarSyntaxError, match=r"in regex /\[\[:alpha:\]\]/: possible nested set") as caught:
        terminal("/[[:alpha:]]/")  # re only warns; Stencil refuses what other engines mean by it
    assert (caught.value.line, caught.value.column) == (2, 4)
