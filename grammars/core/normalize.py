"""The rewrites the parser relies on, all language-preserving.

The parser (`grammars.core.parser`) needs: lexemes that never match the empty string (else the lexer could
emit empty lexemes forever), no left recursion (else its stacks would grow without consuming input),
and no rule that can never finish (else a mask could lead into a dead end). This module establishes
those invariants or reports, by rule name, why it cannot.
"""

from __future__ import annotations

import operator
from collections.abc import Callable

from grammars.core import byte_regex as rx
from grammars.core import ir
from grammars.core.analysis import nullable_rules, productive_rules, reachable_rules, rule_refs, rule_users
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
    refs = {name: rule_refs(expr) for name, expr in grammar.rules.items()}
    _check_refs(grammar, refs)
    size = 0
    rules = {}
    for name, expr in grammar.rules.items():
        check()
        num_nodes, has_lexemes_to_check = _scan(expr)
        size += num_nodes
        if size > MAX_GRAMMAR_SIZE:
            raise ConstraintLimitError(f"the grammar exceeds its budget of {MAX_GRAMMAR_SIZE} expression nodes")
        rules[name] = _lexemes_nonnullable(expr, check) if has_lexemes_to_check else expr
    # Rewriting lexemes keeps the references, and every rewrite below keeps each rule's language, so
    # these facts hold to the end.
    users = rule_users(refs)
    nullable = nullable_rules(rules, users)
    productive = productive_rules(rules, users)
    if grammar.start not in productive:
        raise EmptyLanguageError(f"the grammar admits no string (start rule {grammar.start!r} derives nothing)")
    lexed = rules
    rules = remove_left_recursion(rules, nullable)
    if len(productive) < len(rules):
        rules = {name: _prune(expr, productive) for name, expr in rules.items() if name in productive}
    refs = {name: refs[name] if expr is lexed[name] else rule_refs(expr) for name, expr in rules.items()}
    reachable = reachable_rules(rules, grammar.start, refs)
    if len(reachable) < len(rules):
        rules = {name: expr for name, expr in rules.items() if name in reachable}
    ignore = tuple(t for t in (_nonnullable(t, check) for t in grammar.ignore) if t is not rx.EMPTY)
    return ir.Grammar(rules, grammar.start, ignore)


def _check_refs(grammar: ir.Grammar, refs: dict[str, set[str]]) -> None:
    if grammar.start not in grammar.rules:
        raise GrammarError(f"start rule {grammar.start!r} is not defined")
    for name, called in refs.items():
        for ref in sorted(called):
            if ref not in grammar.rules:
                raise GrammarError(f"rule {name!r} refers to undefined rule {ref!r}")


def _map(expr: ir.Expr, leaf: Callable[[ir.Expr], ir.Expr]) -> ir.Expr:
    """Rebuild `expr` bottom-up with `leaf` applied to Lexeme and Ref nodes; a subtree `leaf` leaves
    alone is returned as it is, not rebuilt (front ends build with the normalizing constructors)."""
    kind = type(expr)
    if kind is ir.Seq:
        items = [_map(e, leaf) for e in expr.items]  # type: ignore[union-attr]
        return expr if all(map(operator.is_, items, expr.items)) else ir.seq(*items)  # type: ignore[union-attr]
    if kind is ir.Alt:
        options = [_map(e, leaf) for e in expr.options]  # type: ignore[union-attr]
        return expr if all(map(operator.is_, options, expr.options)) else ir.alt(*options)  # type: ignore[union-attr]
    if isinstance(expr, ir.Repeat):
        item = _map(expr.item, leaf)
        return expr if item is expr.item else ir.repeat(item, expr.min, expr.max)
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


def _scan(expr: ir.Expr) -> tuple[int, bool]:
    """The size of `expr` (as `ir.expr_size`), and whether a lexeme in it is nullable or not plain:
    the only ones `_lexemes_nonnullable` may change, so most rules need no rebuilding walk."""
    size = 0
    has_lexemes_to_check = False
    todo = [expr]
    while todo:
        node = todo.pop()
        size += 1
        kind = type(node)
        if kind is ir.Lexeme:
            term = node.term  # type: ignore[union-attr]
            has_lexemes_to_check = has_lexemes_to_check or term.nullable or not term.is_plain
        elif kind is ir.Seq:
            todo += node.items  # type: ignore[union-attr]
        elif kind is ir.Alt:
            todo += node.options  # type: ignore[union-attr]
        elif kind is ir.Repeat:
            todo.append(node.item)  # type: ignore[union-attr]
    return size, has_lexemes_to_check


def _lexemes_nonnullable(expr: ir.Expr, check: Check) -> ir.Expr:
    def leaf(node: ir.Expr) -> ir.Expr:
        if not isinstance(node, ir.Lexeme):
            return node
        term = _nonnullable(node.term, check)
        if term is node.term:
            return node
        lexeme = ir.lex(term, node.name)
        return ir.opt(lexeme) if node.term.nullable else lexeme

    return _map(expr, leaf)


def _prune(expr: ir.Expr, productive: set[str]) -> ir.Expr:
    return _map(expr, lambda node: node if not isinstance(node, ir.Ref) or node.name in productive else ir.NOTHING)
