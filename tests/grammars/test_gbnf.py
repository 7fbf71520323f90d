"""The GBNF front end: llama.cpp's syntax, its example grammars' languages, located errors, and
masks over the real SmolLM2 vocabulary."""

import json
from pathlib import Path

import numpy as np
import pytest

import grammars
from grammars import EmptyLanguageError, GrammarError, GrammarSyntaxError
from grammars.core import ir
from grammars.frontends.gbnf.grammar import gbnf_grammar
from grammars.frontends.gbnf.syntax import _HEX_ESCAPES, _SIMPLE_ESCAPES
from tests.grammars.test_matcher import brute_force_mask

# llama.cpp's example grammars (grammars/*.gbnf), written out as fixtures.
JSON = r"""
root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws

object ::=
  "{" ws (
            string ":" ws value
    ("," ws string ":" ws value)*
  )? "}" ws

array  ::=
  "[" ws (
            value
    ("," ws value)*
  )? "]" ws

string ::=
  "\"" (
    [^"\\\x7F\x00-\x1F] |
    "\\" (["\\bfnrt] | "u" [0-9a-fA-F]{4}) # escapes
  )* "\"" ws

number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws

# Optional space: by convention, applied in this grammar after literal chars when allowed
ws ::= | " " | "\n" [ \t]{0,20}
"""

ARITHMETIC = r"""
root  ::= (expr "=" ws term "\n")+
expr  ::= term ([-+*/] term)*
term  ::= ident | num | "(" ws expr ")" ws
ident ::= [a-z] [a-z0-9_]* ws
num   ::= [0-9]+ ws
ws    ::= [ \t\n]*
"""

LIST = r"""
root ::= item+

# Excludes various line break characters
item ::= "- " [^\r\n\x0b\x0c\x85\u2028\u2029]+ "\n"
"""

CHESS = r"""
# `root` specifies the pattern for the overall output
root ::= (
    # it must start with the characters "1. " followed by a sequence
    # of characters that match the `move` rule, followed by a space, followed
    # by another move, and then a newline
    "1. " move " " move "\n"

    # it's followed by one or more subsequent moves, numbered with one or two digits
    ([1-9] [0-9]? ". " move " " move "\n")+
)

# `move` is an abstract representation, which can be a pawn, nonpawn, or castle.
# The `[+#]?` denotes the possibility of checking or mate signs after moves
move ::= (pawn | nonpawn | castle) [+#]?

pawn ::= [a-h] [1-8]
nonpawn ::= [NBKQR] [a-h]? [1-8]? "x"? [a-h] [1-8]
castle ::= "O-O" "-O"?
"""

JAPANESE = r"""
# A probably incorrect grammar for Japanese
root        ::= jp-char+ ([ \t\n] jp-char+)*
jp-char     ::= hiragana | katakana | punctuation | cjk
hiragana    ::= [ぁ-ゟ]
katakana    ::= [ァ-ヿ]
punctuation ::= [、-〾]
cjk         ::= [一-鿿]
"""

LEFT_RECURSIVE = r"""
root ::= expr
expr ::= expr [-+] term | term
term ::= term [*/] factor | factor
factor ::= [0-9]+ | "(" expr ")"
"""


def compiled(text: str, start: str = "root") -> grammars.Constraint:
    return grammars.compile(grammars.GBNF(text, start))


@pytest.mark.parametrize(
    ("grammar", "accepted", "rejected"),
    [
        (
            JSON,
            ['{"a": [1, 2.5e3, "x\\u00e9\\n"], "b": null}', "{}", '{"日本": {"k": [true, false]}}\n  '],
            ['{"a": tru}', "[1]", '{"a": "\x01"}', '{"a": 01}', '{"a": "\\q"}'],
        ),
        (
            ARITHMETIC,
            ["1+2=3\n", "x_1 *(y +2)= 3\n", "a=b\nc=d\n"],
            ["1+=3\n", "1+2=3", "X=1\n", "(1=2\n"],
        ),
        (LIST, ["- milk\n- eggs\n", "- ünïcode ✓\n"], ["", "- \n", "- a\u2028b\n", "-milk\n", "- milk"]),
        (
            CHESS,
            ["1. e4 e5\n2. Nf3 Nc6\n", "1. d4 d5\n10. Nbd7 O-O-O#\n", "1. e4 e5\n2. Bxe5+ Qxd5\n"],
            [
                "1. e4 e5\n",
                "1. e4 e5\n2. exd5 e5\n",
                "1. e9 e5\n2. a1 a2\n",
                "1. e4 e5\n2. Ze4 e5\n",
                "1. e4 e5\n100. a1 a2\n",
            ],
        ),
        (JAPANESE, ["こんにちは", "カタカナ 漢字、ひらがな"], ["hello", "こんにちは ", "日本 語x", "é"]),
        (LEFT_RECURSIVE, ["1", "1+2*3", "(1-2)/3*4", "((7))"], ["", "+1", "1+", "1**2", "(1"]),
    ],
    ids=["json", "arithmetic", "list", "chess", "japanese", "left-recursive"],
)
def test_example_grammars(grammar, accepted, rejected):
    constraint = compiled(grammar)
    for text in accepted:
        assert constraint.accepts(text), text
    for text in rejected:
        assert not constraint.accepts(text), text


@pytest.mark.parametrize(
    ("grammar", "accepted", "rejected"),
    [
        # Alternatives sharing a prefix split the llama.cpp way (no greedy lexeme swallows "ab").
        ('root ::= ("a" | "ab") "bc"', ["abc", "abbc"], ["ab", "abcc"]),
        ('root ::= "a"{2} "b"{1,} "c"{0,2} "d"{2,3}', ["aabdd", "aabbbccddd"], ["abdd", "aacdd", "aabcccdd", "aabd"]),
        ('root ::= ("ab" "c"?){2}?', ["", "abab", "abcabc"], ["ab", "ababab"]),
        ('root ::= "x" * "y" +', ["yy", "xxy"], ["x", ""]),  # blanks before postfix operators
        ('root ::= . "!"', ["a!", "\n!", "日!", "😀!"], ["!", "ab!"]),
        ("root ::= [^a-c\\]] [\\-x-] [a\\x2D]", ["d--", "zx-", "\u00e9-a"], ["a--", "]--", "dyz"]),
        ('root ::= "\\x41\\u00e9\\U0001F600\\t\\r\\n\\\\\\"\\[\\]\\-"', ['Aé😀\t\r\n\\"[]-'], ["A"]),
        ('root ::= "" | "a" ""', ["", "a"], ["b"]),
        ('root ::= | a\na ::= "x"', ["", "x"], ["xx"]),
        ('root ::= "#" # a comment with "quotes" and ::=\n', ["#"], ["", "# a comment"]),
        ('root ::=\n  a |\n  b\r\na ::= (\n  "a"\n  | "A"\n)\nb ::= [0-9]{1,3}', ["a", "A", "123"], ["1234", "b"]),
        ('root ::= x-1\nx-1 ::= 2nd\n2nd ::= "ok"', ["ok"], ["x-1"]),  # names of letters, digits, dashes
        ('root ::= "a"{3000,3001}', ["a" * 3000, "a" * 3001], ["a" * 2999, "a" * 3002]),  # exact counts
    ],
)
def test_syntax(grammar, accepted, rejected):
    constraint = compiled(grammar)
    for text in accepted:
        assert constraint.accepts(text), text
    for text in rejected:
        assert not constraint.accepts(text), text


def test_rules_keep_their_names_and_repetitions_stay_counters():
    grammar = gbnf_grammar('root ::= item{2,5}\nitem ::= "x"')
    assert grammar.start == "root" and set(grammar.rules) == {"root", "item"}
    assert grammar.rules["root"] == ir.repeat(ir.ref("item"), 2, 5)


def test_the_start_argument_picks_the_rule():
    constraint = compiled('root ::= "a"\nother ::= "b"', start="other")
    assert constraint.accepts("b") and not constraint.accepts("a")


def test_compiled_constraints_are_cached_by_text_and_start():
    text = 'root ::= "a" | b\nb ::= "b"'
    assert compiled(text) is compiled(text)
    assert compiled(text, "b") is not compiled(text)


@pytest.mark.parametrize(
    ("grammar", "reason", "line", "column"),
    [
        ('root ::= "a"\n  | "b"', r"expecting a rule name .* only after '::=' or '\|'", 2, 3),
        ('root ::= "a"\n"b"', "expecting a rule name", 2, 1),
        ('root ::= "a"\n  b', "expecting '::=' after the rule name 'b'", 2, 4),
        ('root ::= "a" <think>', "token syntax", 1, 14),
        ("root ::= <[1000]>", "token syntax", 1, 10),
        ('root ::= !<[1000]> "a"', "token syntax", 1, 10),
        ("root ::= a\na ::= b\n", "undefined rule 'b'", 2, 7),
        ('root ::= "\\q"', r"unknown escape \\q", 1, 11),
        ('root ::= "\\x4"', r"\\x needs 2 hex digits", 1, 11),
        ('root ::= "\\U00110000"', "beyond the last code point", 1, 11),
        ('root ::= "\\uD800"', "surrogate", 1, 11),
        ('root ::= "abc', "unterminated string literal", 1, 10),
        ("root ::= [a-z", "unterminated character class", 1, 10),
        ("root ::= []", "empty character class", 1, 10),
        ("root ::= [^]", "empty character class", 1, 10),
        ("root ::= [z-a]", "bad character range z-a", 1, 11),
        ('root ::= ("a"', r"unclosed '\('", 1, 10),
        ('root ::= ("a" ] )', "unexpected ']' inside a group", 1, 15),
        ('root ::= "a" )', r"unmatched '\)'", 1, 14),
        ('root ::= "a" :', "unexpected ':'", 1, 14),
        ("root ::= *", r"'\*' needs a symbol before it", 1, 10),
        ('root ::= ( | "a")+ "b"{3,1}', "maximum is below the minimum", 1, 23),
        ('root ::= "a"{x}', "expecting a count", 1, 14),
        ('root ::= "a"{2', "expecting '}'", 1, 15),
        ('root ::= "a"\nroot ::= "b"', r"rule 'root' is defined twice \(first at line 1\)", 2, 1),
        ('root = "a"', "expecting '::='", 1, 6),
        ('root ::= a | "b"\na ::= "x" a', "derive no finite string .*: a", 2, 1),
        ("root ::= " + "(" * 101 + '"a"' + ")" * 101, "nested deeper than 100", 1, 110),
        ('root ::= "a"' + "?" * 101, "more than 100 repetition operators", 1, 113),
    ],
)
def test_syntax_errors_are_located(grammar, reason, line, column):
    with pytest.raises(GrammarSyntaxError, match=reason) as caught:
        compiled(grammar)
    assert (caught.value.line, caught.value.column) == (line, column)


def test_a_missing_start_rule_lists_the_rules():
    with pytest.raises(GrammarError, match=r"start rule 'root' is not defined \(rules: a, b\)"):
        compiled('b ::= "b"\na ::= "a"')


def test_a_start_rule_deriving_nothing():
    with pytest.raises(EmptyLanguageError, match="admits no string"):
        compiled('root ::= "x" root')


def test_left_recursion_behind_an_empty_prefix_names_the_cycle():
    with pytest.raises(GrammarError, match="left recursion is not supported: a -> a"):
        compiled('root ::= a\na ::= b a "x" | "y"\nb ::= "" | "z"')


def test_text_that_is_not_a_str():
    with pytest.raises(GrammarError, match="must be str, not bytes"):
        compiled(b'root ::= "a"')  # type: ignore[arg-type]


def test_docs_list_every_escape():
    docs = (Path(__file__).resolve().parents[2] / "docs" / "gbnf.md").read_text(encoding="utf-8")
    for escape in _SIMPLE_ESCAPES:
        assert f"`\\{escape}`" in docs, escape
    for letter, num_digits in _HEX_ESCAPES.items():
        assert f"`\\{letter}{'H' * num_digits}`" in docs, letter


def test_masks_equal_the_definition_inside_multibyte_characters(vocab, hf_tokenizer):
    """Tokens that end inside a character (byte-level BPE splits CJK) are judged by the bytes."""
    constraint = compiled(JAPANESE)
    matcher = constraint.matcher(vocab)
    text = "日本語 ひらがな"
    token_ids = hf_tokenizer.encode(text, add_special_tokens=False).ids
    assert any(not _is_utf8(vocab.token_bytes[i]) for i in token_ids)  # some token splits a character
    for token_id in token_ids:
        mask = matcher.mask().numpy()
        assert np.array_equal(mask, brute_force_mask(constraint, vocab, matcher._state))
        matcher.advance(token_id)
    assert matcher.is_accepting()


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_sampled_generation_stays_in_the_language(vocab, seed):
    """Sample uniformly among the allowed tokens under a shrinking budget, as a generation would:
    the text is JSON the grammar accepts, and ends in time."""
    constraint = compiled(JSON)
    matcher = constraint.matcher(vocab)
    rng = np.random.default_rng(seed)
    eos = set(vocab.eos_token_ids)
    data = b""
    for remaining in range(40, 0, -1):
        allowed = np.flatnonzero(matcher.mask(max_remaining_tokens=remaining).numpy())
        assert len(allowed), data
        words = [int(i) for i in allowed if i not in eos]
        if not words or (len(words) < len(allowed) and rng.random() < 0.2):
            break
        token_id = int(rng.choice(words))
        matcher.advance(token_id)
        data += vocab.token_bytes[token_id]
    assert matcher.is_accepting()
    text = data.decode("utf-8")
    assert constraint.accepts(text)
    assert isinstance(json.loads(text), dict)
