"""Hypothesis strategies (and settings) for the fuzz suite: constraint specifications, well-formed and hostile.

Each front end gets a strategy that mixes plausible input (so the fuzzer gets past the parser and
reaches the automaton and the masks) with input meant to break it: wrong types and values where
numbers, strings and schemas go (negative, inf, nan, huge, lone surrogates, integer dict keys), deep
nesting, huge counters and enums, cycles, undefined names and mutated syntax.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

import grammars

# Values

#: Text that may hold a lone surrogate (category Cs), which no UTF-8 output spells.
hostile_text = st.text(st.one_of(st.characters(), st.characters(categories=["Cs"])), max_size=12)
small_text = st.text(string.ascii_lowercase + "0123456789 _-", max_size=8)
huge_numbers = st.sampled_from([10**18, -(10**18), 2**63, 10**400, 1e308, -1e308, 1e-320, 0.1, -0.0])
wild_numbers = st.one_of(
    st.integers(-5, 50), st.integers(), st.floats(allow_nan=True, allow_infinity=True), huge_numbers
)
#: Any Python value a confused caller might put anywhere in a schema.
wild_values = st.recursive(
    st.one_of(st.none(), st.booleans(), wild_numbers, hostile_text, st.just(object())),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(small_text, st.integers(-3, 3), st.none()), inner, max_size=4),
        st.tuples(inner, inner),
    ),
    max_leaves=8,
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.floats(-1e6, 1e6), small_text),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(small_text, inner, max_size=4)),
    max_leaves=8,
)


@dataclass(frozen=True)
class Deep:
    """A recipe for a value nested past every nesting budget: `leaf` wrapped `depth` times, under
    `key` when given. Built in the test, so Hypothesis never prints (and recurses into) the value."""

    wrap: str
    depth: int
    leaf: Any
    key: str | None = None

    def build(self) -> Any:
        value = self.leaf
        for _ in range(self.depth):
            if self.wrap == "list":
                value = [value]
            elif self.wrap == "dict":
                value = {"k": value}
            elif self.wrap == "not":
                value = {"not": value}
            elif self.wrap == "items":
                value = {"type": "array", "items": value}
            else:
                value = {self.wrap: [value]}
        return value if self.key is None else {self.key: value}


def _huge_enum(size: int, kind: str) -> list[Any]:
    if kind == "strings":
        return [f"value-{i}" for i in range(size)]
    if kind == "numbers":
        return [i * 7919 - size for i in range(size)]
    return [{"k": i} if i % 3 == 0 else [i] if i % 3 == 1 else str(i) for i in range(size)]


huge_enums = st.builds(_huge_enum, st.integers(0, 3_000), st.sampled_from(["strings", "numbers", "mixed"]))

# Regexes

REGEX_PIECES = [
    *"abcxyz019.^$|*+?(){}[]-\\/,",
    "(?:",
    "(?=",
    "(?!",
    "(?<=",
    "(?<!",
    "(?P<n>",
    "(?P=n)",
    "(?i)",
    "(?s)",
    "\\1",
    "[^",
    "[a-z]",
    "[\\w-]",
    "\\d",
    "\\D",
    "\\w",
    "\\W",
    "\\s",
    "\\S",
    "\\b",
    "\\B",
    "\\A",
    "\\Z",
    "\\n",
    "\\t",
    "\\x41",
    "\\u00e9",
    "\\U0001F600",
    "\\p{L}",
    "\\P{N}",
    "\\p{Greek}",
    "\\c",
    "\\0",
    "{2}",
    "{2,}",
    "{,3}",
    "{1,5}",
    "{5,1}",
    "{99999}",
    "{0,1000000}",
    "{4294967296}",
    "*?",
    "+?",
    "??",
    "é",
    "☃",
    "\ud800",
    "\x00",
    "[[:alpha:]]",
]


def _regex_ast(leaf: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Well-bracketed regexes: so most get past the parser to the automaton."""

    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        counter = st.one_of(
            st.sampled_from(["*", "+", "?", "*?", "{3}", "{0,2}", "{2,}"]),
            st.builds(lambda m, n: f"{{{m},{n}}}", st.integers(0, 3), st.sampled_from([5, 50, 999, 100_000])),
        )
        return st.one_of(
            st.builds(lambda a, b: a + b, inner, inner),
            st.builds(lambda a, b: f"{a}|{b}", inner, inner),
            st.builds(
                lambda group, body: f"{group}{body})", st.sampled_from(["(", "(?:", "(?=", "(?!", "(?<="]), inner
            ),
            st.builds(lambda body, count: f"(?:{body}){count}", inner, counter),
        )

    return st.recursive(leaf, extend, max_leaves=10)


_regex_leaves = st.one_of(
    st.sampled_from(["a", "b", ".", "\\d", "\\w", "[a-c]", "[^x]", "é", "\\s", "[0-9a-f]", "x{2,3}"]),
    st.text(string.ascii_lowercase, min_size=1, max_size=3),
)
regexes = st.one_of(
    _regex_ast(_regex_leaves),
    st.lists(st.sampled_from(REGEX_PIECES), max_size=16).map("".join),
    st.builds(lambda depth, body: "(" * depth + body + ")" * depth, st.integers(1, 1_500), st.just("a")),
    st.builds(lambda n: f"a{{{n}}}", st.sampled_from([10_000, 10**6, 10**12, 2**64])),
    hostile_text,
)
regex_specs = st.builds(grammars.Regex, regexes, st.sampled_from(["python", "ecmascript"]))

# JSON Schema

TYPE_NAMES = ["string", "integer", "number", "boolean", "null", "object", "array"]
FORMATS = ["date", "date-time", "time", "email", "uri", "uuid", "ipv4", "ipv6", "hostname", "duration", "regex", "nope"]
REFS = ["#", "#/$defs/a", "#/$defs/b", "#/$defs/missing", "#/properties/x", "#/definitions/a", "#a", "other.json", ""]
small_counts = st.one_of(st.integers(0, 6), wild_numbers)


def _keyword_values(schemas: st.SearchStrategy[Any]) -> dict[str, st.SearchStrategy[Any]]:
    """Per keyword: a plausible value most of the time, anything at all otherwise."""
    plausible: dict[str, st.SearchStrategy[Any]] = {
        "type": st.one_of(st.sampled_from(TYPE_NAMES), st.lists(st.sampled_from(TYPE_NAMES), max_size=3)),
        "enum": st.one_of(st.lists(json_values, max_size=5), huge_enums),
        "const": json_values,
        "minLength": small_counts,
        "maxLength": small_counts,
        "pattern": st.one_of(st.sampled_from(["^[a-z]+$", "a|b", "[0-9]{2,4}", "^(?!x).*$", "\\p{L}+", "("]), regexes),
        "format": st.sampled_from(FORMATS),
        "minimum": wild_numbers,
        "maximum": wild_numbers,
        "exclusiveMinimum": st.one_of(wild_numbers, st.booleans()),
        "exclusiveMaximum": st.one_of(wild_numbers, st.booleans()),
        "multipleOf": st.one_of(st.sampled_from([1, 2, 0.5, 0.01, 3, 1e-9]), wild_numbers),
        "items": st.one_of(schemas, st.lists(schemas, max_size=3)),
        "prefixItems": st.lists(schemas, max_size=3),
        "additionalItems": schemas,
        "minItems": small_counts,
        "maxItems": small_counts,
        "uniqueItems": st.booleans(),
        "contains": schemas,
        "minContains": small_counts,
        "maxContains": small_counts,
        "properties": st.dictionaries(st.one_of(small_text, hostile_text), schemas, max_size=4),
        "required": st.lists(st.one_of(small_text, st.sampled_from(["x", "a"])), max_size=4),
        "additionalProperties": schemas,
        "patternProperties": st.dictionaries(st.sampled_from(["^a", "[0-9]+", "x$", "(", ".*"]), schemas, max_size=2),
        "propertyNames": schemas,
        "minProperties": small_counts,
        "maxProperties": small_counts,
        "dependentRequired": st.dictionaries(small_text, st.lists(small_text, max_size=2), max_size=2),
        "dependentSchemas": st.dictionaries(small_text, schemas, max_size=2),
        "unevaluatedProperties": schemas,
        "anyOf": st.lists(schemas, max_size=3),
        "oneOf": st.lists(schemas, max_size=3),
        "allOf": st.lists(schemas, max_size=3),
        "not": schemas,
        "if": schemas,
        "then": schemas,
        "else": schemas,
        "$ref": st.sampled_from(REFS),
        "$defs": st.dictionaries(st.sampled_from(["a", "b", "c"]), schemas, max_size=3),
        "definitions": st.dictionaries(st.sampled_from(["a", "b"]), schemas, max_size=2),
        "$id": st.sampled_from(["a", "http://example.com/s.json", ""]),
        "$anchor": st.sampled_from(["a", "b"]),
        "$schema": st.sampled_from(["https://json-schema.org/draft/2020-12/schema", "http://x", ""]),
        "title": small_text,
        "description": hostile_text,
        "default": json_values,
        "examples": st.lists(json_values, max_size=2),
    }
    return {keyword: st.one_of(value, value, value, wild_values) for keyword, value in plausible.items()}


def _schema_objects(schemas: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[Any, Any]]:
    values = _keyword_values(schemas)
    keyword = st.one_of(st.sampled_from(sorted(values)), st.sampled_from(["x-unknown", "$comment", "nullable"]))
    return st.lists(keyword, max_size=5, unique=True).flatmap(
        lambda keywords: st.fixed_dictionaries({k: values.get(k, wild_values) for k in keywords})
    )


def _recursive_schemas() -> st.SearchStrategy[Any]:
    leaves: st.SearchStrategy[Any] = st.one_of(
        st.booleans(),
        st.fixed_dictionaries({"type": st.sampled_from(TYPE_NAMES)}),
        st.fixed_dictionaries({"$ref": st.sampled_from(REFS)}),
        st.fixed_dictionaries({}),
    )
    return st.recursive(leaves, _schema_objects, max_leaves=12)


#: Whole JSON Schemas: keyword soups (recursive via $ref and $defs), deep nesting, wrong types at the root.
schemas = st.one_of(
    _recursive_schemas(),
    _recursive_schemas(),
    st.builds(
        lambda defs, root: {"$defs": defs, **root},
        st.dictionaries(st.sampled_from(["a", "b"]), _recursive_schemas(), max_size=2),
        _recursive_schemas().filter(lambda s: isinstance(s, dict)),
    ),
    st.builds(
        Deep,
        st.sampled_from(["anyOf", "allOf", "oneOf", "not", "items", "list", "dict"]),
        st.integers(1, 2_500),
        st.sampled_from([{}, {"type": "string"}, {"$ref": "#"}, 1, True]),
    ),
    st.builds(Deep, st.sampled_from(["list", "dict"]), st.integers(1, 2_500), st.just(1), st.just("const")),
    wild_values,
)

# Lark grammars

RULE_NAMES = ["start", "a", "b", "item", "_hidden", "?inline", "undefined_rule"]
TERMINAL_NAMES = ["A", "B", "WORD", "NUM", "_SEP", "UNDEFINED"]
_lark_atoms = st.one_of(
    st.sampled_from([n.lstrip("?") for n in RULE_NAMES] + TERMINAL_NAMES),
    st.builds(json.dumps, small_text.filter(bool)),
    st.builds(lambda r: "/" + r.replace("/", "\\/") + "/", _regex_ast(_regex_leaves)),
    st.sampled_from(['"a".."z"', '"x"i', "/[0-9]+/", "/a/i", "LETTER", "common.INT"]),
)


def _lark_expressions(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.builds(lambda a, b: f"{a} {b}", inner, inner),
        st.builds(lambda a, b: f"{a} | {b}", inner, inner),
        st.builds(
            lambda a, op: f"({a}){op}", inner, st.sampled_from(["", "*", "+", "?", " ~ 3", " ~ 0..2", " ~ 100000"])
        ),
        st.builds(lambda a: f"[{a}]", inner),
        st.builds(lambda a: f"t{{{a}}}", inner),
    )


lark_expressions = st.recursive(_lark_atoms, _lark_expressions, max_leaves=8)
_lark_rules = st.builds(lambda name, body: f"{name}: {body}", st.sampled_from(RULE_NAMES), lark_expressions)
_lark_terminals = st.builds(
    lambda name, body: f"{name}: {body}",
    st.sampled_from(TERMINAL_NAMES),
    st.recursive(
        st.one_of(st.builds(json.dumps, small_text.filter(bool)), st.sampled_from(["/[a-z]+/", "/\\d+/", "A", "B"])),
        _lark_expressions,
        max_leaves=5,
    ),
)
_lark_directives = st.sampled_from(
    [
        "%import common.WS",
        "%ignore WS",
        "%import common (INT, LETTER)",
        "%import common.NUMBER -> NUM",
        '%ignore " "',
        "%declare X",
        '%override A: "o"',
        "t{x}: x x",
        "%import nowhere.X",
        "%ignore",
    ]
)


def _mutate(text: str, edits: list[tuple[int, str]]) -> str:
    """Insert or overwrite characters at positions: syntax errors at random places."""
    for position, piece in edits:
        at = position % (len(text) + 1)
        text = text[:at] + piece + text[at + 1 :] if piece == "" else text[:at] + piece + text[at:]
    return text


_lark_texts = st.lists(
    st.one_of(_lark_rules, _lark_rules, _lark_terminals, _lark_directives), min_size=1, max_size=7
).map("\n".join)
lark_texts = st.one_of(
    _lark_texts,
    st.builds(
        _mutate,
        _lark_texts,
        st.lists(
            st.tuples(st.integers(0, 500), st.sampled_from(list(':|()[]"/%~{}\n?*') + ["", "\ud800"])),
            min_size=1,
            max_size=3,
        ),
    ),
    st.builds(lambda n: "start: " + "(" * n + '"a"' + ")" * n, st.integers(1, 1_500)),
    st.builds(
        lambda n: "\n".join(["start: r0", *(f'r{i}: r{i + 1} | "{i}"' for i in range(n)), f'r{n}: "z"']),
        st.integers(1, 800),
    ),
    hostile_text,
)
lark_specs = st.builds(grammars.Lark, lark_texts, st.sampled_from(["start", "start", "a", "missing"]))

# Choice


class _Colour:
    """An enum-like option: Choice takes its `.value`."""

    def __init__(self, value: object) -> None:
        self.value = value


choice_options = st.one_of(
    st.lists(st.one_of(small_text, hostile_text), max_size=8),
    st.lists(st.one_of(small_text, st.integers(), st.floats(), st.none(), st.builds(_Colour, wild_values)), max_size=6),
    st.builds(lambda n: [f"option {i}" for i in range(n)], st.integers(0, 3_000)),
    st.builds(lambda n: ["x" * n, "y"], st.integers(0, 20_000)),
)

#: Strings to ask `accepts()` about: random text and JSON documents.
sample_texts = st.lists(st.one_of(hostile_text, json_values.map(json.dumps), small_text), max_size=4)

# Settings

#: The Hypothesis profile of the fuzz tests, registered by tests/grammars/conftest.py.
FUZZ_PROFILE = "stencil-fuzz"
_SLOW_DATA = [
    HealthCheck.too_slow,
    HealthCheck.data_too_large,
    HealthCheck.filter_too_much,
    HealthCheck.large_base_example,
]


def register_fuzz_profile(*, is_long: bool) -> None:
    """Short and repeatable in a default run (a few seconds); long and random when `-m` selects fuzz.

    Per-example time is bounded by the tests themselves (compile and mask budgets plus a wall-clock
    alarm), not by Hypothesis' deadline, which would flag the first mask of a new lexer state.
    """
    if is_long:
        profile = settings(max_examples=400, deadline=None, suppress_health_check=_SLOW_DATA)
    else:
        profile = settings(max_examples=6, deadline=None, derandomize=True, suppress_health_check=_SLOW_DATA)
    settings.register_profile(FUZZ_PROFILE, profile)
