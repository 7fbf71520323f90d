"""The compiled parser configurations (`grammars.core._parser`) against the Python reference.

Both parsers run the same calls on the same network; configurations are hash-consed in creation
order by both, so equal call sequences must give equal ids, and each id the same stacks, acceptance
and allowed lexemes. Budgets must stop both at the same call with the same error.
"""

import random

import pytest

import grammars
from grammars.core import parser as parser_module
from grammars.core.automaton import GrammarAutomaton
from grammars.core.normalize import normalize
from grammars.core.parser import Parser
from grammars.errors import ConstraintLimitError, GrammarError
from grammars.frontends.json_schema.compiler import schema_grammar
from grammars.frontends.lark.grammar import lark_grammar
from tests.grammars.test_limits import PALINDROME
from tests.grammars.test_native_walk import FREE_TEXT_SCHEMA, SCHEMAS, corpus_schemas

NESTED_ARRAYS = {"type": "array", "items": {"$ref": "#"}}


def both_parsers(grammar) -> tuple[Parser, Parser]:
    normalized = normalize(grammar)
    reference, compiled = Parser(normalized, compiled=False), Parser(normalized, compiled=True)
    assert compiled.is_compiled and not reference.is_compiled
    return reference, compiled


def assert_same_config(reference: Parser, compiled: Parser, config: int) -> None:
    assert compiled.stacks(config) == reference.stacks(config), config
    assert compiled.is_accepting(config) == reference.is_accepting(config), config
    assert compiled.allowed_lexemes(config) == reference.allowed_lexemes(config), config


def random_run(reference: Parser, compiled: Parser, rng: random.Random, steps: int) -> int:
    """Random lexeme sequences (mostly allowed lexemes, some not) and joins, run on both parsers;
    returns how many steps found a configuration."""
    assert compiled.initial == reference.initial
    lexemes = len(reference.lexeme_terms)
    config, seen, advanced = reference.initial, [reference.initial], 0
    for _ in range(steps):
        allowed = reference.allowed_lexemes(config)
        if rng.random() < 0.1 and len(seen) > 1:
            chosen = rng.sample(seen, rng.randint(1, min(4, len(seen))))
            result: int | None = reference.join(chosen)
            assert compiled.join(chosen) == result
        else:
            lexeme = rng.choice(allowed) if allowed and rng.random() < 0.9 else rng.randrange(lexemes)
            result = reference.advance(config, lexeme)
            assert compiled.advance(config, lexeme) == result, (config, lexeme)
        if result is None:
            config = rng.choice(seen)
            continue
        assert_same_config(reference, compiled, result)
        advanced += 1
        seen.append(result)
        config = result if reference.allowed_lexemes(result) else rng.choice(seen)
    assert compiled.configs == reference.configs
    assert compiled.num_frames == reference.num_frames
    return advanced


@pytest.mark.parametrize("schema", [SCHEMAS["object"], NESTED_ARRAYS, FREE_TEXT_SCHEMA])
def test_compiled_parser_matches_reference(schema):
    reference, compiled = both_parsers(schema_grammar(schema))
    assert random_run(reference, compiled, random.Random(7), 400) > 100


@pytest.mark.slow
def test_compiled_parser_matches_reference_on_corpus_schemas():
    """Random lexeme sequences over 24 corpus schemas."""
    rng, compared = random.Random(22), 0
    for name, schema in corpus_schemas(24):
        try:
            reference, compiled = both_parsers(schema_grammar(schema))
        except GrammarError:
            continue
        assert random_run(reference, compiled, rng, 600) > 0, name
        compared += 1
    assert compared >= 20


def test_counter_rules_and_deep_nesting_match_reference():
    """Counted repetitions (a frame's count) and nesting (deep stacks) by both parsers."""
    schema = {"type": "array", "items": {"type": "array", "items": {"$ref": "#"}}, "minItems": 20, "maxItems": 40}
    reference, compiled = both_parsers(schema_grammar(schema))
    assert random_run(reference, compiled, random.Random(1), 800) > 200
    stacks = [stack for config in compiled.configs for stack in config]
    assert any(count > 0 for stack in stacks for _, count in stack)
    assert max(map(len, stacks)) > 3


def automata(grammar, monkeypatch: pytest.MonkeyPatch) -> tuple[GrammarAutomaton, GrammarAutomaton]:
    """Automata of `grammar` on the Python and on the compiled configurations."""
    with monkeypatch.context() as patch:
        patch.setattr(parser_module, "compiled_parser", None)
        reference = GrammarAutomaton(grammar)
    compiled = GrammarAutomaton(grammar)
    assert compiled.parser.is_compiled and not reference.parser.is_compiled
    return reference, compiled


#: (budget, its value here, grammar, texts walked one after another from the start, the error's words)
BUDGETS = [
    (
        "MAX_FRAMES",
        20_000,
        lark_grammar(PALINDROME),
        ["abcdefghijklmnopqrstuvwxy" * 2 + chr(97 + n % 26) * (n % 7) for n in range(400)],
        "budget of 20000 stack frames",
    ),
    ("MAX_STACK_DEPTH", 30, schema_grammar(NESTED_ARRAYS), ["[" * depth for depth in range(1, 100)], "too deep"),
    ("MAX_STACKS_PER_CONFIG", 40, lark_grammar(PALINDROME), ["a" * 100], "more than 40 stacks"),
]


@pytest.mark.parametrize(("budget", "value", "grammar", "texts", "words"), BUDGETS, ids=[b[0] for b in BUDGETS])
def test_budgets_stop_both_at_the_same_walk(budget, value, grammar, texts, words, monkeypatch):
    monkeypatch.setattr(parser_module, budget, value)
    outcomes = []
    for automaton in automata(grammar, monkeypatch):
        walked = 0
        with pytest.raises(ConstraintLimitError, match=words) as raised:
            for text in texts:
                automaton.walk(automaton.initial, text.encode())
                walked += 1
        outcomes.append((walked, str(raised.value), automaton.parser.num_frames, automaton.parser.configs))
    assert outcomes[0] == outcomes[1]


def test_matchers_on_compiled_configurations_accept_what_the_reference_does(monkeypatch):
    grammar = schema_grammar(SCHEMAS["object"])
    reference, compiled = automata(grammar, monkeypatch)
    texts = [b'{"name": "x", "age": 3}', b'{"name": "x", "age": -3}', b'{"age": 3}', b'{"name": "ab", "tags": ["a"]}']
    expected = [True, False, False, True]
    assert [compiled.accepts(text) for text in texts] == [reference.accepts(text) for text in texts] == expected


def test_compiled_required_without_extension_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(parser_module, "compiled_parser", None)
    with pytest.raises(RuntimeError, match="grammars.core._parser is not built"):
        Parser(normalize(schema_grammar(SCHEMAS["pattern"])), compiled=True)
    assert not Parser(normalize(schema_grammar(SCHEMAS["pattern"]))).is_compiled


def test_inconsistent_network_is_refused():
    native = parser_module.compiled_parser
    assert native is not None
    parser = Parser(normalize(schema_grammar(SCHEMAS["pattern"])), compiled=False)
    network = list(parser._flat_network())
    limits = (1, 1, 1, 1, 1)
    messages = ("a", "b", "c")
    network[2] = [len(parser._nodes) + 5] * len(network[2])  # lexeme edges to nodes that do not exist
    with pytest.raises(ValueError, match="inconsistent"):
        native.Configurations(network, limits, ConstraintLimitError, messages)
    with pytest.raises(ValueError, match="12 arrays"):
        native.Configurations(network[:3], limits, ConstraintLimitError, messages)
    compiled = Parser(normalize(schema_grammar(SCHEMAS["pattern"])), compiled=True)
    with pytest.raises(IndexError, match="no parser configuration"):
        compiled.advance(10**6, 0)


def test_compiled_is_the_default():
    parser = grammars.compile(SCHEMAS["object"], cache=False).automaton.parser
    assert parser.is_compiled
    assert parser.compiled_bytes > 0


def test_bounds_beyond_the_compiled_counters_run_in_python():
    schema = {"type": "array", "items": {"type": "integer"}, "maxItems": 2**70}
    grammar = normalize(schema_grammar(schema))
    assert not Parser(grammar).is_compiled
    with pytest.raises(RuntimeError, match="repetition bound"):
        Parser(grammar, compiled=True)
    assert grammars.compile(schema, cache=False).automaton.accepts(b"[1, 2, 3]")
