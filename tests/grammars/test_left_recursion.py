"""Indirect left recursion made direct, so the parser can turn it into loops; languages unchanged."""

import pytest

from grammars.core import ir
from grammars.core.analysis import left_calls, nullable_rules
from grammars.core.automaton import GrammarAutomaton
from grammars.core.left_recursion import remove_left_recursion
from grammars.errors import GrammarError

X, Y, Z, W = (ir.lit(c) for c in "xyzw")


def grammar(rules: dict[str, ir.Expr], start: str = "a") -> ir.Grammar:
    return ir.Grammar(remove_left_recursion(rules), start)


def indirect_cycles(rules: dict[str, ir.Expr]) -> list[str]:
    nullable = nullable_rules(rules)
    return [
        name for name, expr in rules.items() if left_calls(expr, nullable) - {name} & _callers_of(name, rules, nullable)
    ]


def _callers_of(name: str, rules: dict[str, ir.Expr], nullable: set[str]) -> set[str]:
    return {other for other, expr in rules.items() if other != name and name in left_calls(expr, nullable)}


def test_two_rule_cycle():
    rules = {"a": ir.alt(ir.seq(ir.ref("b"), X), Y), "b": ir.alt(ir.seq(ir.ref("a"), Z), W)}
    automaton = GrammarAutomaton(grammar(rules))
    assert [s for s in ["y", "wx", "yzx", "yzxzx", "wxzx"] if not automaton.accepts(s.encode())] == []
    assert [s for s in ["x", "yz", "wxz", ""] if automaton.accepts(s.encode())] == []


def test_hub_rule_of_a_join_grammar():
    # sql: from_item: name | join | cross ; join: from_item "J" from_item ; cross: from_item "C" from_item
    rules = {
        "a": ir.alt(X, ir.ref("join"), ir.ref("cross")),
        "join": ir.seq(ir.ref("a"), ir.lit("J"), ir.ref("a")),
        "cross": ir.seq(ir.ref("a"), ir.lit("C"), ir.ref("a")),
    }
    result = remove_left_recursion(rules)
    assert indirect_cycles(result) == []
    automaton = GrammarAutomaton(ir.Grammar(result, "a"))
    assert automaton.accepts(b"xJxCx") and not automaton.accepts(b"xJ")


def test_left_calls_inside_groups_and_after_optional_prefixes():
    rules = {"a": ir.alt(ir.seq(ir.alt(ir.ref("b"), Z), X), Y), "b": ir.seq(ir.opt(W), ir.ref("a"))}
    automaton = GrammarAutomaton(grammar(rules))
    assert [s for s in ["y", "zx", "yx", "wyx", "wzxx"] if not automaton.accepts(s.encode())] == []
    assert automaton.accepts(b"wyx") and not automaton.accepts(b"w")


def test_direct_recursion_behind_an_optional_is_spread_for_the_parser():
    rules = {"a": ir.seq(ir.opt(ir.seq(ir.ref("a"), ir.lit(","))), X)}
    automaton = GrammarAutomaton(grammar(rules))
    assert automaton.accepts(b"x,x,x") and not automaton.accepts(b"x,")


def test_unresolvable_cycle_is_left_for_the_parser_to_report():
    # a's left call to b sits behind a nullable rule n, which substitution at the head cannot see
    rules = {
        "a": ir.alt(ir.seq(ir.ref("n"), ir.ref("b"), X), Y),
        "b": ir.alt(ir.seq(ir.ref("a"), Z), W),
        "n": ir.opt(W),
    }
    with pytest.raises(GrammarError, match="left recursion"):
        GrammarAutomaton(grammar(rules))


def test_ambiguous_binary_operator_chains_stay_small():
    """`e: e "+" e | atom` parses long chains with one stack, not one per nesting."""
    rules = {"e": ir.alt(ir.seq(ir.ref("e"), ir.lit("+"), ir.ref("e")), X)}
    automaton = GrammarAutomaton(ir.Grammar(rules, "e"))
    chain = b"+".join([b"x"] * 300)
    assert automaton.accepts(chain)
    assert not automaton.accepts(chain + b"+")
    assert max(len(c) for c in automaton.parser.configs) <= 2
