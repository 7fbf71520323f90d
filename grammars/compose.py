"""Composing constraints: free text first, then a marker, then a constrained answer.

Chain-of-thought under a constraint needs one grammar for the whole completion: the model writes
reasoning in its own words, then a marker (e.g. "\\nAnswer:"), then text in the answer's language.
The reasoning and the marker are one lexeme, "UTF-8 text that does not contain the marker, then the
marker": since the text cannot contain the marker, the first occurrence of the marker is where the
reasoning ends, and the greedy lexer needs no lookahead to find it. The lexeme's DFA has one state
per (position in the marker, partial UTF-8 character), so its token masks are computed a few dozen
times and then come from the mask cache, whatever the length of the reasoning.

The reasoning is not bounded in bytes here on purpose: a byte counter would make every position a
new lexer state, so each token would pay a full vocabulary walk. Bound it in tokens instead: when a
generation's reasoning budget runs out, continue it with `marker_then_answer`, which forces the
marker and then the answer (the text so far plus the marker is still a sentence of the first
constraint's reasoning part, since that reasoning never contains the whole marker).

An answer whose JSON objects must not repeat a key (a JSON Schema answer) keeps that rule: the key
scanner (`grammars.core.distinct_keys`) starts after the marker, where the first occurrence of the
marker ends the reasoning, so nothing the reasoning says is read as JSON.
"""

from __future__ import annotations

from grammars.compiler import Constraint, compile_grammar
from grammars.core import byte_regex as rx
from grammars.core import ir
from grammars.core.charset import MAX_CODE_POINT, CharSet, utf8_term
from grammars.errors import GrammarError

#: One Unicode scalar value, UTF-8 encoded (surrogates excluded by CharSet).
_ANY_CHAR = utf8_term(CharSet.range(0, MAX_CODE_POINT))


def text_then_marker(marker: str) -> rx.Term:
    """The byte term "any UTF-8 text not containing `marker`, then `marker`".

    Args:
        marker: the non-empty string that ends the free text.

    Returns:
        A byte-regex term usable as a lexeme.

    Raises:
        GrammarError: an empty marker (the free text could never end).
    """
    if not marker:
        raise GrammarError("the marker that ends free text must not be empty")
    marker_term = rx.literal(marker.encode("utf-8"))
    contains_marker = rx.concat(rx.ANYTHING, marker_term, rx.ANYTHING)
    text = rx.difference(rx.star(_ANY_CHAR), contains_marker)
    return rx.concat(text, marker_term)


def reasoning_then_answer(answer: Constraint | None, marker: str, *, separator: str = " ") -> Constraint:
    """A constraint for "free text, `marker`, optionally `separator`, then a sentence of `answer`".

    Args:
        answer: the constraint the final answer must satisfy; None lets the answer be any text.
        marker: the string that ends the reasoning (it never occurs inside the reasoning).
        separator: text that may sit between the marker and the answer ("" for none), so a model
            used to writing "Answer: 42" is not forced into "Answer:42".

    Returns:
        A compiled constraint; its `accepts` and matchers cover the whole completion.

    Raises:
        GrammarError: an empty marker, or an answer grammar that cannot be compiled.
    """
    return _then_answer(answer, text_then_marker(marker), separator, f"reasoning, {marker!r}")


def marker_then_answer(answer: Constraint | None, marker: str, *, separator: str = " ") -> Constraint:
    """A constraint for "`marker`, optionally `separator`, then a sentence of `answer`": what a
    reasoning that ran out of budget is continued with, so the answer still comes.

    Args, Returns, Raises: as `reasoning_then_answer`.
    """
    if not marker:
        raise GrammarError("the marker that starts the answer must not be empty")
    return _then_answer(answer, rx.literal(marker.encode("utf-8")), separator, repr(marker))


def _then_answer(answer: Constraint | None, head: rx.Term, separator: str, head_description: str) -> Constraint:
    """`head` as one lexeme, the optional separator, then the answer's grammar (its rules renamed so
    they cannot clash with ours, its %ignore terms kept)."""
    rules = ir.RuleSet()
    if answer is None:
        answer_expr = ir.lex(rx.star(_ANY_CHAR), "free text")
        ignore: tuple[rx.Term, ...] = ()
    else:
        grammar = answer.grammar
        names = {name: rules.reserve(name) for name in grammar.rules}
        for name, expr in grammar.rules.items():
            rules.set(names[name], _renamed(expr, names))
        answer_expr = ir.ref(names[grammar.start])
        ignore = grammar.ignore
    start = ir.seq(
        ir.lex(head, head_description),
        ir.opt(ir.lit(separator)) if separator else ir.EMPTY,
        answer_expr,
    )
    description = f"{head_description}, then {answer.description if answer is not None else 'text'}"
    grammar = rules.grammar(rules.define("then_answer", start), ignore)
    if answer is not None:
        grammar.distinct_keys_after = _keys_after(head, separator, answer.grammar.distinct_keys_after)
        grammar.keys_may_run_out = answer.grammar.keys_may_run_out  # its objects are the answer's
    return compile_grammar(grammar, description)


#: Bytes that change where a key scanner stands outside JSON strings (closers and commas do not
#: matter before the first container opens).
_JSON_OPENERS = frozenset(b'"{[')


def _keys_after(head: rx.Term, separator: str, answer_keys_after: rx.Term | None) -> rx.Term | None:
    """Where the composed output's JSON begins: after the head (whose one lexeme ends at the first
    occurrence of the marker), the separator and the answer's own prefix.

    When the answer's JSON begins at once, the scanner starts right after the head and so reads the
    separator (the gate cannot tell an optional separator from the answer's first bytes).

    Raises:
        GrammarError: such a separator holds a byte that would open JSON text (`"`, `{`, `[`).
    """
    if answer_keys_after is None:
        return None
    if answer_keys_after.nullable and _JSON_OPENERS.intersection(separator.encode("utf-8")):
        raise GrammarError(
            f"the separator {separator!r} before a JSON answer may not hold a quote, brace or bracket: "
            "end the marker with it instead"
        )
    tail = rx.optional(rx.literal(separator.encode("utf-8"))) if separator else rx.EPSILON
    return rx.concat(head, tail, answer_keys_after)


def _renamed(expr: ir.Expr, names: dict[str, str]) -> ir.Expr:
    """`expr` with every rule reference renamed by `names` (rule names of the two grammars may clash)."""
    if isinstance(expr, ir.Ref):
        return ir.Ref(names[expr.name])
    if isinstance(expr, ir.Seq):
        return ir.Seq(tuple(_renamed(item, names) for item in expr.items))
    if isinstance(expr, ir.Alt):
        return ir.Alt(tuple(_renamed(option, names) for option in expr.options))
    if isinstance(expr, ir.Repeat):
        return ir.Repeat(_renamed(expr.item, names), expr.min, expr.max)
    return expr
