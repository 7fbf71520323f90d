"""Bad input to every front end ends in a typed Stencil error with its location, never a raw
Python exception (RecursionError, OverflowError, UnicodeEncodeError, TypeError, IndexError)."""

from __future__ import annotations

from typing import Any

import pytest

import grammars
from grammars.errors import (
    EmptyLanguageError,
    GrammarError,
    GrammarSyntaxError,
    SchemaError,
    SchemaNestingError,
    StencilError,
)
from grammars.frontends.json_schema.compiler import MAX_NESTING as MAX_APPLICATOR_NESTING
from grammars.frontends.json_schema.compiler import MAX_VALUE_NESTING
from grammars.frontends.lark.nesting import MAX_NESTING as MAX_LARK_NESTING


def nested(wrap: Any, depth: int, leaf: Any) -> Any:
    for _ in range(depth):
        leaf = wrap(leaf)
    return leaf


def compile_fresh(spec: Any) -> grammars.Constraint:
    return grammars.compile(spec, cache=False)


# (case, specification, error type, pointer the SchemaError carries)
SCHEMA_CASES = [
    ("maxLength inf", {"type": "string", "maxLength": float("inf")}, SchemaError, "/maxLength"),
    ("minLength nan", {"type": "string", "minLength": float("nan")}, SchemaError, "/minLength"),
    ("maxItems inf", {"type": "array", "maxItems": float("inf")}, SchemaError, "/maxItems"),
    ("minProperties -inf", {"type": "object", "minProperties": float("-inf")}, SchemaError, "/minProperties"),
    ("minimum inf", {"type": "number", "minimum": float("inf")}, SchemaError, "/minimum"),
    ("maximum nan", {"type": "number", "maximum": float("nan")}, SchemaError, "/maximum"),
    ("multipleOf inf", {"type": "number", "multipleOf": float("inf")}, SchemaError, "/multipleOf"),
    ("integer property name", {"properties": {1: {"type": "string"}}}, SchemaError, "/properties"),
    ("integer pattern key", {"patternProperties": {1: {"type": "string"}}}, SchemaError, "/patternProperties"),
    ("integer required", {"properties": {"a": {}}, "required": [1]}, SchemaError, "/required"),
    ("pattern not a string", {"type": "string", "pattern": 5}, SchemaError, "/pattern"),
    ("enum not a list", {"enum": "abc"}, SchemaError, "/enum"),
    ("properties a list", {"type": "object", "properties": [1, 2]}, SchemaError, "/properties"),
    ("items a number", {"type": "array", "items": 3}, SchemaError, "/items"),
    ("surrogate property", {"properties": {"a\ud800": {"type": "string"}}}, SchemaError, "/properties/a\ud800"),
    ("enum value not JSON", {"enum": [object()]}, SchemaError, "/enum/0"),
    (
        "anyOf 500 deep",
        nested(lambda s: {"anyOf": [s]}, 500, {"type": "string"}),
        SchemaNestingError,
        "/anyOf/0" * MAX_APPLICATOR_NESTING,
    ),
    (
        "allOf 500 deep",
        nested(lambda s: {"allOf": [s]}, 500, {}),
        SchemaNestingError,
        "/allOf/0" * MAX_APPLICATOR_NESTING,
    ),
    ("not 500 deep", nested(lambda s: {"not": s}, 500, {}), SchemaNestingError, "/not" * MAX_APPLICATOR_NESTING),
    ("const 900 deep", {"const": nested(lambda s: [s], 900, 1)}, SchemaNestingError, "/const"),
    ("enum value 900 deep", {"enum": ["a", nested(lambda s: {"k": s}, 900, 1)]}, SchemaNestingError, "/enum/1"),
]


@pytest.mark.parametrize(("spec", "error", "pointer"), [c[1:] for c in SCHEMA_CASES], ids=[c[0] for c in SCHEMA_CASES])
def test_bad_schemas_raise_typed_errors_at_their_pointer(spec: Any, error: type[SchemaError], pointer: str) -> None:
    with pytest.raises(error) as caught:
        compile_fresh(spec)
    assert caught.value.pointer == pointer


def test_nesting_errors_name_their_budget() -> None:
    with pytest.raises(SchemaNestingError) as caught:
        compile_fresh({"const": nested(lambda s: [s], MAX_VALUE_NESTING + 1, 1)})
    assert caught.value.max_depth == MAX_VALUE_NESTING and str(MAX_VALUE_NESTING) in str(caught.value)
    assert isinstance(caught.value, grammars.ConstraintLimitError)
    compile_fresh({"const": nested(lambda s: [s], MAX_VALUE_NESTING - 1, 1)})  # within the budget


@pytest.mark.parametrize(
    "wrap",
    [lambda s: {"type": "array", "items": s}, lambda s: {"type": "object", "properties": {"a": s}, "required": ["a"]}],
    ids=["items", "properties"],
)
def test_children_500_deep_compile_without_recursion(wrap: Any) -> None:
    """Property values and items are compiled from a work list, so depth is no limit there."""
    constraint = compile_fresh(nested(wrap, 500, {"type": "integer"}))
    is_array = "items" in wrap(0)
    instance = nested((lambda s: f"[{s}]") if is_array else (lambda s: f'{{"a":{s}}}'), 500, "7")
    assert constraint.accepts(instance)
    assert not constraint.accepts(instance.replace("7", '"7"'))


SURROGATE_VALUES = [
    ("const", {"const": "a\ud800"}),
    ("enum", {"enum": ["\udfff"]}),
    ("pattern", {"type": "string", "pattern": "a\ud800"}),
    ("regex", grammars.Regex("a\ud800")),
]


@pytest.mark.parametrize("spec", [c[1] for c in SURROGATE_VALUES], ids=[c[0] for c in SURROGATE_VALUES])
def test_values_only_a_lone_surrogate_spells_admit_nothing(spec: Any) -> None:
    """No UTF-8 output holds a lone surrogate, so a language of such strings is empty (typed)."""
    with pytest.raises(EmptyLanguageError):
        compile_fresh(spec)


def test_an_enum_keeps_its_spellable_values() -> None:
    constraint = compile_fresh({"enum": ["\ud800", "ok"]})
    assert constraint.accepts('"ok"')


def test_a_choice_with_a_lone_surrogate_is_refused_naming_the_option() -> None:
    with pytest.raises(GrammarError, match=r"option 1 .* at offset 1"):
        compile_fresh(grammars.Choice(["fine", "a\ud800"]))


# (case, Lark text, line and column of the error)
LARK_SYNTAX_CASES = [
    ("1000 nested groups", "start: " + "(" * 1000 + '"a"' + ")" * 1000, (1, 1008)),
    ("1000 nested optionals", "start: " + "[" * 1000 + '"a"' + "]" * 1000, (1, 1008)),
    ("1000 nested repeats", "start: " + "(" * 1000 + '"a"' + ")*" * 1000, (1, 1008)),
    ("1000 nested groups in a terminal", "start: A\nA: " + "(" * 1000 + '"a"' + ")" * 1000, (2, 1004)),
    ("1000 nested template arguments", "start: " + "t{" * 1000 + '"a"' + "}" * 1000 + "\nt{x}: x", (1, 206)),
    (
        "chain of 2000 terminals",
        "\n".join(["start: T0", *(f"T{i}: T{i + 1}" for i in range(2000)), 'T2000: "a"']),
        (2, 1),
    ),
    ("1000 nested regex groups", "start: /" + "(" * 1000 + "a" + ")" * 1000 + "/", (1, 8)),
    ("lone surrogate", 'start: "a\ud800"', (1, 10)),
]


@pytest.mark.parametrize(("text", "where"), [c[1:] for c in LARK_SYNTAX_CASES], ids=[c[0] for c in LARK_SYNTAX_CASES])
def test_bad_lark_text_raises_a_located_syntax_error(text: str, where: tuple[int, int]) -> None:
    with pytest.raises(GrammarSyntaxError) as caught:
        compile_fresh(grammars.Lark(text))
    assert (caught.value.line, caught.value.column) == where


def test_lark_nesting_at_the_budget_compiles() -> None:
    depth = MAX_LARK_NESTING - 1  # the rule's own alternatives are one level
    assert compile_fresh(grammars.Lark("start: " + "(" * depth + '"a"' + ")" * depth)).accepts("a")
    chain = "\n".join(["start: T0", *(f"T{i}: T{i + 1}" for i in range(depth - 1)), f'T{depth - 1}: "a"'])
    assert compile_fresh(grammars.Lark(chain)).accepts("a")


LARK_CYCLES = [
    ("two rules", "start: b\nb: start", EmptyLanguageError, "b, start"),
    ("three rules", "start: a\na: b\nb: start", EmptyLanguageError, "a, b, start"),
    ("self, right", 'start: "x" start', EmptyLanguageError, "start"),
    ("unused by the start", 'start: "a" | b\nb: c\nc: b', GrammarSyntaxError, "b, c"),
]


@pytest.mark.parametrize(("text", "error", "names"), [c[1:] for c in LARK_CYCLES], ids=[c[0] for c in LARK_CYCLES])
def test_lark_rule_cycles_without_a_finite_string_name_the_rules(
    text: str, error: type[GrammarError], names: str
) -> None:
    with pytest.raises(error, match="derive no finite string") as caught:
        compile_fresh(grammars.Lark(text))
    assert str(caught.value).split("again): ")[1].startswith(names)


def test_a_cycle_off_the_start_rule_is_located_at_its_definition() -> None:
    with pytest.raises(GrammarSyntaxError) as caught:
        compile_fresh(grammars.Lark('start: "a" | b\nb: c\nc: b'))
    assert caught.value.line == 2 and caught.value.column == 1


REGEX_CASES = [
    ("1000 nested groups", "(" * 1000 + "a" + ")" * 1000, 101),
    ("1000 nested non-capturing groups", "(?:" * 1000 + "a" + ")" * 1000, 301),
]


@pytest.mark.parametrize(("pattern", "column"), [c[1:] for c in REGEX_CASES], ids=[c[0] for c in REGEX_CASES])
def test_deep_regexes_raise_a_located_syntax_error(pattern: str, column: int) -> None:
    with pytest.raises(GrammarSyntaxError) as caught:
        compile_fresh(grammars.Regex(pattern))
    assert caught.value.column == column


WRONG_TYPES = [
    ("Lark text", lambda: grammars.Lark(5)),  # type: ignore[arg-type]
    ("Lark start", lambda: grammars.Lark('start: "a"', start=None)),  # type: ignore[arg-type]
    ("regex pattern", lambda: grammars.Regex(5)),  # type: ignore[arg-type]
]


@pytest.mark.parametrize("make", [c[1] for c in WRONG_TYPES], ids=[c[0] for c in WRONG_TYPES])
def test_wrong_typed_specifications_raise_grammar_errors(make: Any) -> None:
    with pytest.raises(GrammarError, match="must be str"):
        compile_fresh(make())


def test_errors_format_cheaply_and_print_safely() -> None:
    """Messages of deep or odd input are bounded and encodable (a caller may log them)."""
    for spec in (nested(lambda s: {"anyOf": [s]}, 500, {}), grammars.Lark("start: " + "(" * 1000 + '"a"' + ")" * 1000)):
        with pytest.raises(StencilError) as caught:
            compile_fresh(spec)
        assert len(str(caught.value)) < 2_000
        str(caught.value).encode("utf-8")


def _list_nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


# Found by the fuzz suite (tests/grammars/test_fuzz.py).
NOT_SPECIFICATIONS = [
    ("format not a string", lambda: {"format": []}, "format must be a string"),
    ("non-string keyword", lambda: {0: None}, "keywords are strings"),
    ("$defs not an object", lambda: {"$defs": [1]}, "must be an object of schemas"),
    ("empty string", lambda: "", "not a str"),
    ("a string that is no type", lambda: "\U00018cd6", "not a str"),
    ("list nested 1,200 deep", lambda: _list_nested(1200), "not a list"),
]


@pytest.mark.parametrize("make,message", [c[1:] for c in NOT_SPECIFICATIONS], ids=[c[0] for c in NOT_SPECIFICATIONS])
def test_values_that_are_no_specification_raise_grammar_errors(make: Any, message: str) -> None:
    with pytest.raises(GrammarError, match=message):
        compile_fresh(make())
