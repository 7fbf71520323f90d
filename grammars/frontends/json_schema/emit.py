"""A DNF to one grammar expression: scalars merged into one lexeme per type, containers as rules.

All alternatives of a type that is a single lexeme (numbers, strings) are merged into one lexeme
term, so the lexer never sees two overlapping string or number lexemes at one position; arrays and
objects tokenize the same way in every alternative (the same punctuation lexemes), so greedy lexing
never cuts one alternative's text where another needs it and the parser settles which holds.
Literal values (`enum`/`const`) are emitted in canonical text: strings as `json.dumps(...,
ensure_ascii=False)`, numbers in plain decimal (integral values as integers), containers in the
value's own key order under the active whitespace policy.
"""

from __future__ import annotations

from grammars.core import byte_regex as rx
from grammars.core import ir
from grammars.frontends.json_schema import numbers
from grammars.frontends.json_schema.arrays import emit_array
from grammars.frontends.json_schema.layout import Layout
from grammars.frontends.json_schema.nodes import DNF, ArrT, BoolT, LitT, NullT, NumT, ObjT, StrT, Value, json_type
from grammars.frontends.json_schema.object_grammar import emit_object
from grammars.frontends.json_schema.refs import Loc
from grammars.frontends.json_schema.scalars import number_literal_texts, string_literal_text
from grammars.frontends.json_schema.strings import string_lexeme


def emit_dnf(dnf: DNF, depth: int, ctx, hint: str, where: Loc | None) -> ir.Expr:
    """The grammar of the values a DNF admits, at nesting `depth`."""
    literals: dict[str, Value] = {}
    for node in dnf:
        if isinstance(node, LitT):
            literals.update((v.key, v) for v in node.values)
    by_type: dict[str, list[Value]] = {}
    for value in literals.values():
        by_type.setdefault(json_type(value.value), []).append(value)
    options: list[ir.Expr] = []
    if any(isinstance(n, NullT) for n in dnf) or "null" in by_type:
        options.append(ir.lit("null"))
    booleans: set[bool] = set().union(*(n.values for n in dnf if isinstance(n, BoolT)))
    booleans |= {v.value for v in by_type.get("boolean", []) if isinstance(v.value, bool)}
    options += [ir.lit("true" if b else "false") for b in sorted(booleans, reverse=True)]
    number_terms = [_number_term(n) for n in dnf if isinstance(n, NumT)]
    if "number" in by_type:
        number_terms.append(rx.literals(t for v in by_type["number"] for t in number_literal_texts(v.value)))
    if number_terms:
        options.append(ir.lex(rx.alt(*number_terms), "number"))
    string_terms = [string_lexeme(n.term) for n in dnf if isinstance(n, StrT)]
    string_texts = []
    for text in (v.value for v in by_type.get("string", []) if isinstance(v.value, str)):
        try:
            string_texts.append(string_literal_text(text))
        except UnicodeEncodeError:
            continue  # a lone surrogate has no UTF-8 text: no JSON text we emit denotes it
    if string_texts:
        string_terms.append(rx.literals(string_texts))
    if string_terms:
        options.append(ir.lex(rx.alt(*string_terms), "string"))
    options += [emit_array(n, depth, ctx, hint, where) for n in dnf if isinstance(n, ArrT)]
    options += [literal_expr(v.value, depth, ctx.layout) for v in by_type.get("array", [])]
    options += [emit_object(n, depth, ctx, hint, where) for n in dnf if isinstance(n, ObjT)]
    options += [literal_expr(v.value, depth, ctx.layout) for v in by_type.get("object", [])]
    return ir.alt(*options) if options else ir.NOTHING


def _number_term(node: NumT) -> rx.Term:
    return rx.intersect(node.term, numbers.CANONICAL_INTEGER) if node.integer_text else node.term


def literal_expr(value: object, depth: int, layout: Layout) -> ir.Expr:
    """The canonical text of one JSON value as lexemes (the same tokenization as every other value)."""
    if isinstance(value, str):
        try:
            return ir.lex(rx.literal(string_literal_text(value)), "string")
        except UnicodeEncodeError:
            return ir.NOTHING
    if isinstance(value, list):
        items = [literal_expr(item, depth + 1, layout) for item in value]
        return _container(items, "[]", depth, layout)
    if isinstance(value, dict):
        try:
            members = [
                ir.seq(
                    ir.lex(rx.literal(string_literal_text(key)), "key"),
                    layout.colon(),
                    literal_expr(item, depth + 1, layout),
                )
                for key, item in value.items()
            ]
        except UnicodeEncodeError:
            return ir.NOTHING  # a key with a lone surrogate: no UTF-8 text spells it
        return _container(members, "{}", depth, layout)
    kind = json_type(value)
    if kind == "null":
        return ir.lit("null")
    if kind == "boolean":
        return ir.lit("true" if value else "false")
    return ir.lex(rx.literals(number_literal_texts(value)), "number")


def _container(members: list[ir.Expr], brackets: str, depth: int, layout: Layout) -> ir.Expr:
    if not members:
        return layout.empty(brackets)
    parts = [layout.open(brackets[0], depth), members[0]]
    for member in members[1:]:
        parts += [layout.comma(depth), member]
    parts.append(layout.close(brackets[1], depth))
    return ir.seq(*parts)
