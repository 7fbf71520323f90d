"""Grammar normalization, the stack-set parser and the byte-level automaton on hand-made grammars."""

import pytest

from grammars.core import byte_regex as rx
from grammars.core import ir
from grammars.core.automaton import GrammarAutomaton
from grammars.errors import EmptyLanguageError, GrammarError

NUMBER = ir.lex(rx.concat(rx.optional(rx.literal(b"-")), rx.repeat(rx.byte_range(48, 57), 1, None)), "NUMBER")


def nested_lists() -> ir.Grammar:
    rules = ir.RuleSet()
    value = rules.reserve("value")
    rules.set(
        value, ir.alt(NUMBER, ir.seq(ir.lit("["), ir.separated(ir.ref(value), ir.lit(","), 0, None), ir.lit("]")))
    )
    return rules.grammar(ir.ref(value))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1", True),
        ("[1,2,[3,[]]]", True),
        ("[]", True),
        ("-12", True),
        ("[[[[1]]]]", True),
        ("[1,", False),
        ("[1 2]", False),
        ("[1,2],", False),
        ("", False),
        ("[01a]", False),
    ],
)
def test_recursive_grammar(text, expected):
    assert GrammarAutomaton(nested_lists()).accepts(text.encode()) is expected


def test_deep_nesting_keeps_working():
    automaton = GrammarAutomaton(nested_lists())
    assert automaton.accepts(b"[" * 500 + b"7" + b"]" * 500)
    assert not automaton.accepts(b"[" * 500 + b"7" + b"]" * 499)


def test_direct_left_recursion_becomes_a_loop():
    rules = ir.RuleSet()
    total = rules.reserve("sum")
    rules.set(total, ir.alt(ir.seq(ir.ref(total), ir.lit("+"), NUMBER), NUMBER))
    automaton = GrammarAutomaton(rules.grammar(ir.ref(total)))
    assert automaton.accepts(b"1+2+3")
    assert automaton.accepts(b"1")
    assert not automaton.accepts(b"1+")


def test_indirect_left_recursion_is_rewritten():
    rules = ir.RuleSet()
    a, b = rules.reserve("a"), rules.reserve("b")
    rules.set(a, ir.alt(ir.seq(ir.ref(b), ir.lit("x")), ir.lit("y")))
    rules.set(b, ir.alt(ir.seq(ir.ref(a), ir.lit("z")), ir.lit("w")))
    automaton = GrammarAutomaton(rules.grammar(ir.ref(a)))
    assert all(automaton.accepts(t) for t in (b"y", b"wx", b"yzx", b"wxzx"))
    assert not any(automaton.accepts(t) for t in (b"w", b"yz", b"x"))


def test_left_recursion_behind_a_nullable_prefix_is_an_error_naming_the_rules():
    rules = ir.RuleSet()
    a, maybe = rules.reserve("a"), rules.reserve("maybe")
    rules.set(maybe, ir.opt(ir.lit("q")))
    rules.set(a, ir.alt(ir.seq(ir.ref(maybe), ir.ref(a), ir.lit("x")), ir.lit("y")))
    with pytest.raises(GrammarError, match="left recursion is not supported: a -> a"):
        GrammarAutomaton(rules.grammar(ir.ref(a)))


def test_counted_repetition_counts_without_unrolling():
    grammar = ir.RuleSet().grammar(ir.seq(ir.lit("["), ir.separated(NUMBER, ir.lit(","), 2, 1000), ir.lit("]")))
    automaton = GrammarAutomaton(grammar)
    assert not automaton.accepts(b"[1]")
    assert automaton.accepts(b"[1,2]")
    assert automaton.accepts(b"[" + b",".join([b"1"] * 1000) + b"]")
    assert not automaton.accepts(b"[" + b",".join([b"1"] * 1001) + b"]")
    assert automaton.parser.num_nodes < 50


def test_empty_language_is_an_error():
    rules = ir.RuleSet()
    loop = rules.reserve("loop")
    rules.set(loop, ir.seq(ir.lit("a"), ir.ref(loop)))  # never terminates
    with pytest.raises(EmptyLanguageError):
        GrammarAutomaton(rules.grammar(ir.ref(loop)))


def test_undefined_rule_is_an_error():
    with pytest.raises(GrammarError, match="undefined rule 'nope'"):
        GrammarAutomaton(ir.Grammar({"start": ir.ref("nope")}, "start"))


def test_nullable_lexemes_and_ignored_whitespace():
    word = ir.lex(rx.star(rx.byte_range(97, 122)), "WORD")  # nullable: matches ""
    grammar = ir.RuleSet().grammar(ir.seq(ir.lit("("), word, ir.lit(")")), ignore=(rx.literal(b" "),))
    automaton = GrammarAutomaton(grammar)
    assert automaton.accepts(b"()")
    assert automaton.accepts(b"( abc )")
    assert not automaton.accepts(b"(a b)")


def test_ambiguous_lexemes_are_resolved_by_the_parser():
    keyword = ir.lit("if")
    name = ir.lex(rx.repeat(rx.byte_range(97, 122), 1, None), "NAME")
    grammar = ir.RuleSet().grammar(
        ir.alt(ir.seq(keyword, ir.lit("("), name, ir.lit(")")), ir.seq(name, ir.lit("="), name))
    )
    automaton = GrammarAutomaton(grammar)
    assert automaton.accepts(b"if(x)")
    assert automaton.accepts(b"if=x")
    assert not automaton.accepts(b"of(x)")


def test_reserved_rule_names_never_clash_with_numbered_ones() -> None:
    rules = ir.RuleSet()
    taken = rules.reserve("x__1")
    names = [rules.reserve("x"), rules.reserve("x"), rules.reserve("x")]
    assert taken == "x__1" and len({taken, *names}) == 4


def test_configurations_allowing_the_same_lexemes_share_one_start_state(monkeypatch):
    """`lexer_start` builds a start state once per set of allowed lexemes, not per configuration."""
    automaton = GrammarAutomaton(nested_lists())
    built: list[tuple[int, ...]] = []
    start_state = automaton.lexer.start_state
    monkeypatch.setattr(
        automaton.lexer,
        "start_state",
        lambda terms, check: built.append(tuple(term.id for term in terms)) or start_state(terms, check),
    )
    configs = []
    for prefix in (b"[", b"[[", b"[[[", b"[1,", b"[[1,", b"[[1,[2,", b"[[[[["):
        state = automaton.walk(automaton.initial, prefix)
        assert state is not None and state[1] is None
        configs.append(state[0])
        automaton.lexer_start(state[0])
    assert len(set(configs)) == len(configs)
    assert len(built) == len(set(built)), "a set of lexemes was built twice"
    assert len(built) < len(configs)
    for config in configs:  # the shared state is the one of its own lexemes
        terms = tuple(automaton.parser.lexeme_terms[i] for i in automaton.parser.allowed_lexemes(config))
        assert automaton.lexer_start(config) == start_state(terms + automaton._ignore_terms)
