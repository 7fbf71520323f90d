"""The shipped Lark grammars: each loads, accepts its examples, rejects near misses, and agrees with
Lark's own Earley parser on random sentences and their mutations, up to our greedy lexing (see
test_lark_corpus): `WHEREx` is one name for us, as in SQL, where Earley's dynamic lexer may split it."""

import random
from importlib import resources

import pytest
from lark import Lark
from lark.exceptions import LarkError

import grammars
from grammars.errors import GrammarError
from grammars.frontends.lark.grammar import lark_grammar
from grammars.library import LIBRARY_NAMES, library_grammar
from tests.grammars.lark_sentences import SentenceGenerator, mutations, rejected_by_greedy_lexing

EXAMPLES = {
    "arithmetic": (
        ["2 * (x + 1.5e3) ^ 2 - max(a, -b) / 4", "-(-1)", "f()", "1 % 2 ^ 3 ^ 4", ".5 + 3."],
        ["1 +", "(1", "1 2", "2 ** 3", "f(,)", ""],
    ),
    "csv": (
        [
            'name,price,note\napple,1.20,"red, or green"\n"pear ""conference""",0.95,\n',
            "a,b\r\nc,d",
            ",,",
            '"multi\nline",x',
        ],
        ['a"b', '"unclosed', 'a,"b"c', "a\n\r"],
    ),
    "json": (
        [
            '{"name": "Ada", "tags": ["x", "y\\u00e9\\n"], "n": -0.5e+3, "ok": true, "none": null}',
            "[]",
            '"\\"q\\""',
            " 0 ",
            '{"a":{"b":[1,[2,[]]]}}',
            '"caf\u00e9 \U0001f600"',
        ],
        ['{"a": 1,}', "[01]", '{"a" 1}', "{'a': 1}", '"\\x"', "[1 2]", '"a\tb"', "+1", "1.", "[", "nul"],
    ),
    "sql_select": (
        [
            "SELECT c.name, COUNT(*) AS orders\nFROM customers AS c LEFT JOIN orders o ON o.customer_id = c.id\n"
            "WHERE c.country IN ('FR', 'DE') AND o.total BETWEEN 10 AND 100.5\nGROUP BY c.name HAVING COUNT(*) > 2\n"
            "ORDER BY orders DESC, c.name LIMIT 10;",
            "select * from t",
            "SELECT DISTINCT a FROM (SELECT a FROM t) AS s WHERE NOT EXISTS (SELECT 1 FROM u WHERE u.a = s.a) UNION ALL SELECT b FROM v -- done",
            "SELECT CASE WHEN x > 1 THEN 'it''s big' ELSE 'small' END, CAST(y AS VARCHAR(10)) FROM t CROSS JOIN w JOIN z USING (id) LIMIT 5 OFFSET 10",
            'select "from", fromage from selection',
        ],
        [
            "SELECT FROM t",
            "SELECT a FROM",
            "select a from t where",
            "select 'a from t",
            "SELECT a FROM t LIMIT x",
            "select a b c from t",
            "SELECT a FROM t;;",
        ],
    ),
    "tool_call": (
        [
            "get_weather(city=\"Paris\", unit='celsius')",
            '[search(query="lark grammar", max_results=5), browser.open(url="https://lark-parser.org")]',
            "f()",
            'f(1, (2,), {"a": [True, None]}, x=-1.5e3,)',
            "f(())",
            "f(flag=true, missing=null)",
        ],
        ["f(x=)", "f(1", "f(x=y)", "1 + 2", "f(**k)", "[f(), ]x", "f(a.b=1)"],
    ),
}


def lark_accepts(parser: Lark, text: str) -> bool:
    try:
        parser.parse(text)
    except LarkError:
        return False
    return True


def test_names_are_the_shipped_files():
    shipped = sorted(
        p.name[: -len(".lark")]
        for p in resources.files("grammars").joinpath("library").iterdir()
        if p.name.endswith(".lark")
    )
    assert list(LIBRARY_NAMES) == shipped == sorted(EXAMPLES)


def test_unknown_name_lists_the_library():
    with pytest.raises(GrammarError, match="no library grammar named 'yaml'.*json, sql_select"):
        library_grammar("yaml")


@pytest.mark.parametrize("name", LIBRARY_NAMES)
def test_examples_and_near_misses(name):
    text = library_grammar(name)
    constraint = grammars.compile(grammars.Lark(text))
    parser = Lark(text, parser="earley", lexer="dynamic")
    accepted, rejected = EXAMPLES[name]
    assert [s for s in accepted if not (constraint.accepts(s) and lark_accepts(parser, s))] == []
    assert [s for s in rejected if constraint.accepts(s) or lark_accepts(parser, s)] == []


@pytest.mark.parametrize("name", LIBRARY_NAMES)
def test_random_sentences_and_mutations_agree_with_lark(name):
    text = library_grammar(name)
    grammar = lark_grammar(text)
    constraint = grammars.compile(grammars.Lark(text))
    parser = Lark(text, parser="earley", lexer="dynamic")
    rng = random.Random(name)
    generator = SentenceGenerator(grammar, rng, max_depth=4)  # short sentences: Earley on SQL is slow
    disagreements = []
    num_sentences = 0
    while num_sentences < 15:
        sentence = generator.sentence()
        if sentence is None:
            continue
        num_sentences += 1
        assert constraint.accepts(sentence) and lark_accepts(parser, sentence), sentence
        for mutated in mutations(sentence, rng, 4):
            ours, theirs = constraint.accepts(mutated), lark_accepts(parser, mutated)
            if ours != theirs and not (theirs and rejected_by_greedy_lexing(constraint.automaton, mutated)):
                disagreements.append(mutated)
    assert disagreements == []
