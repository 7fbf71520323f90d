"""The rewrites the parser relies on, all language-preserving.

The parser (`grammars.core.parser`) needs: lexemes that never match the empty string (else the lexer could
emit empty lexemes forever), no left recursion (else its stacks would grow without consuming input),
and no rule that can never finish (else a mask could lead into a dead end). This module establishes
those invariants or reports, by rule name, why it cannot.
"""

from __future__ import annotations

from grammars.core import byte_regex as rx
from grammars.core import ir
from grammars.core.analysis import productive_rules, reachable_rules, rule_refs
from grammars.core.budget import Check, no_check
from grammars.core.left_recursion import remove_left_recursion
from grammars.core.lexer import is_empty_language
from grammars.errors import ConstraintLimitError, EmptyLanguageError, GrammarError

#: Largest grammar (in IR expression nodes) the compiler accepts.
MAX_GRAMMAR_SIZE = 2_000_000


def normalize(grammar: ir.Grammar, check: Check = no_check) -> ir.Grammar:
    """A grammar with the same language whose lexemes are non-nullable and non-empty, whose left
    recursion is turned into loops (see `grammars.core.left_recursion`), and whose unproductive rules are
    removed.

    `check` is called per rule and per emptiness search.

    Raises:
        EmptyLanguageError: the start rule derives no string.
        GrammarError: a rule referenced but not defined.
        ConstraintLimitError: the grammar exceeds MAX_GRAMMAR_SIZE, or from `check`.
    """
    _check_refs(grammar)
    size = 0
    rules = {}
    for name, expr in grammar.rules.items():
        check()
        size += ir.expr_size(expr)
        if size > MAX_GRAMMAR_SIZE:
            raise ConstraintLimitError(f"the grammar exceeds its budget of {MAX_GRAMMAR_SIZE} expression nodes")
        rules[name] = _lexemes_nonnullable(expr, check)
    rules = remove_left_recursion(rules)
    productive = productive_rules(rules)
    if grammar.start not in productive:
        raise EmptyLanguageError(f"the grammar admits no string (start rule {grammar.start!r} derives nothing)")
    rules = {name: _prune(expr, productive) for name, expr in rules.items() if name in productive}
    reachable = reachable_rules(rules, grammar.start)
    rules = {name: expr for name, expr in rules.items() if name in reachable}
    ignore = tuple(t for t in (_nonnullable(t, check) for t in grammar.ignore) if t is not rx.EMPTY)
    return ir.Grammar(rules, grammar.start, ignore)


def _check_refs(grammar: ir.Grammar) -> None:
    if grammar.start not in grammar.rules:
        raise GrammarError(f"start rule {grammar.start!r} is not defined")
    for name, expr in grammar.rules.items():
        for ref in sorted(rule_refs(expr)):
            if ref not in grammar.rules:
                raise GrammarError(f"rule {name!r} refers to undefined rule {ref!r}")


def _map(expr: ir.Expr, leaf) -> ir.Expr:
    """Rebuild `expr` bottom-up with `leaf` applied to Lexeme and Ref nodes."""
    if isinstance(expr, ir.Seq):
        return ir.seq(*(_map(e, leaf) for e in expr.items))
    if isinstance(expr, ir.Alt):
        return ir.alt(*(_map(e, leaf) for e in expr.options))
    if isinstance(expr, ir.Repeat):
        return ir.repeat(_map(expr.item, leaf), expr.min, expr.max)
    return leaf(expr)


# ----------------------------------------------------------------------------------------------
# Lexemes
# ----------------------------------------------------------------------------------------------


def _nonnullable(term: rx.Term, check: Check) -> rx.Term:
    """`term` without the empty string, expanded one byte deep so the result stays a plain term."""
    if not term.nullable:
        return rx.EMPTY if (not term.is_plain and is_empty_language(term, check)) else term
    return rx.alt(
        *(rx.concat(rx.byte_set(cls), rx.derivative(term, rx.lowest_byte(cls))) for cls in rx.derivative_classes(term))
    )


def _lexemes_nonnullable(expr: ir.Expr, check: Check) -> ir.Expr:
    def leaf(node: ir.Expr) -> ir.Expr:
        if not isinstance(node, ir.Lexeme):
            return node
        term = _nonnullable(node.term, check)
        lexeme = ir.lex(term, node.name)
        return ir.opt(lexeme) if node.term.nullable else lexeme

    return _map(expr, leaf)


def _prune(expr: ir.Expr, productive: set[str]) -> ir.Expr:
    return _map(expr, lambda node: node if not isinstance(node, ir.Ref) or node.name in productive else ir.NOTHING)
