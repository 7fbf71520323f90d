"""JSON Schema to grammar, end to end: the language of the compiled grammar, keyword by keyword."""

import json
import warnings

import pytest

from grammars.compiler import compile_grammar
from grammars.errors import (
    ConstraintLimitError,
    EmptyLanguageError,
    GrammarError,
    SchemaError,
    UnsupportedSchemaError,
    UnsupportedSchemaWarning,
)
from grammars.frontends.json_schema import schema_grammar


def accepts(schema, texts, **options) -> list[bool]:
    constraint = compile_grammar(schema_grammar(schema, **options))
    return [constraint.accepts(t) for t in texts]


def check(schema, good, bad, **options):
    assert accepts(schema, good, **options) == [True] * len(good), good
    assert accepts(schema, bad, **options) == [False] * len(bad), bad


PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["name"],
}
PERSON_VALUE = {"name": "Ada", "age": 36, "tags": ["a", "b"]}


# ----------------------------------------------------------------------------------------------
# Whitespace policies
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "whitespace, good, bad",
    [
        (
            "flexible",
            [json.dumps(PERSON_VALUE), json.dumps(PERSON_VALUE, separators=(",", ":"))],
            [json.dumps(PERSON_VALUE, indent=2)],
        ),
        ("compact", [json.dumps(PERSON_VALUE, separators=(",", ":"))], [json.dumps(PERSON_VALUE)]),
        ("spaced", [json.dumps(PERSON_VALUE)], [json.dumps(PERSON_VALUE, separators=(",", ":"))]),
    ],
)
def test_whitespace_policies(whitespace, good, bad):
    check(PERSON, good, bad + ['{"name":  "Ada"}', ' {"name": "Ada"}'], whitespace=whitespace)


@pytest.mark.parametrize("indent", [0, 2, 4])
def test_indent_is_exactly_json_dumps(indent):
    values = [PERSON_VALUE, {"name": "x", "tags": []}, {"name": "y", "tags": [], "age": 1}]
    texts = [json.dumps(v, indent=indent) for v in values[:2]]
    check(PERSON, texts, [json.dumps(PERSON_VALUE), json.dumps(PERSON_VALUE, indent=indent + 1)], indent=indent)


def test_indent_tracks_depth_through_recursion():
    tree = {
        "$defs": {"t": {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/t"}}}}},
        "$ref": "#/$defs/t",
    }
    value = {"kids": [{"kids": [{"kids": []}]}, {}]}
    check(tree, [json.dumps(value, indent=2)], [json.dumps(value, indent=2).replace("\n      ", "\n    ", 1)], indent=2)


def test_bad_layout_options_are_typed_errors():
    with pytest.raises(GrammarError, match="whitespace"):
        schema_grammar({}, whitespace="loose")
    with pytest.raises(GrammarError, match="indent"):
        schema_grammar({}, indent=-1)


# ----------------------------------------------------------------------------------------------
# Any value, scalars
# ----------------------------------------------------------------------------------------------


def test_empty_schema_is_any_json_value():
    check(
        {},
        ["1", "-0.5e3", '"x"', "null", "true", "[]", "{}", '{"a": [1, {"b": null}]}', '"\\ud83d\\ude00"'],
        ["", "01", "[1,]", "{'a': 1}", "nul", '"\\ud800"', "[1,  2]"],
    )
    check(True, ["1"], ["x"])


def test_false_schema_is_an_empty_language():
    with pytest.raises(EmptyLanguageError):
        schema_grammar(False)
    with pytest.raises(EmptyLanguageError):
        schema_grammar({"type": "integer", "minimum": 5, "maximum": 4})


def test_integers_are_canonical_and_bounded_exactly():
    check(
        {"type": "integer", "minimum": -3, "exclusiveMaximum": 250},
        ["-3", "0", "249", "-0"],
        ["-4", "250", "1.0", "1e2", "007", "2.5"],
    )
    check({"type": "integer", "multipleOf": 7, "maximum": 100}, ["0", "98", "-700"], ["99", "105", "7.0"])


def test_numbers_with_decimal_bounds_and_multiples():
    check(
        {"type": "number", "minimum": 0.5, "maximum": 2.25},
        ["0.5", "2.25", "1", "2.2500", "0.75"],
        ["0.49", "2.251", "-1", "1e0"],
    )
    check({"type": "number", "multipleOf": 0.01}, ["1.25", "3", "-0.5", "1.250"], ["1.255", "0.001"])
    check({"type": "number"}, ["1e-05", "-2.5E+3", "0"], ["1.", ".5", "+1", "NaN"])


def test_draft4_boolean_exclusive_bounds():
    schema = {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "type": "number",
        "minimum": 1,
        "exclusiveMinimum": True,
    }
    check(schema, ["1.01", "2"], ["1", "0.5"])


def test_strings_lengths_patterns_and_escapes():
    check(
        {"type": "string", "minLength": 2, "maxLength": 3},
        ['"ab"', '"a\\nb"', '"\\u00e9\\u00e9"', '"😀😀"'],
        ['"a"', '"abcd"', '"\\ud83d\\ude00"'],
    )
    check({"type": "string", "pattern": "^A+$"}, ['"A"', '"\\u0041A"', '"AA"'], ['"a"', '"AB"', '""'])
    check({"type": "string", "pattern": "b"}, ['"abc"', '"b"'], ['"ac"'])


# ----------------------------------------------------------------------------------------------
# enum / const
# ----------------------------------------------------------------------------------------------


def test_enum_and_const_of_any_values_in_canonical_form():
    schema = {"enum": ["é", 1, 2.5, None, True, [1, "a"], {"k": [False]}]}
    check(
        schema,
        ['"é"', "1", "2.5", "null", "true", '[1, "a"]', '{"k": [false]}', '{"k":[false]}'],
        ['"e"', "1.5", "false", '["a", 1]', '{"k": [true]}'],
    )
    check({"const": {"a": 1}, "type": "object"}, ['{"a": 1}'], ['{"a": 2}', "1"])


def test_enum_is_filtered_by_sibling_keywords():
    check({"type": "string", "enum": ["a", "bb", 3], "maxLength": 1}, ['"a"'], ['"bb"', "3"])


def test_large_enums_compile_to_a_small_grammar():
    grammar = schema_grammar({"enum": [f"value-{i}" for i in range(20_000)]})
    assert grammar.size() <= 3
    assert accepts({"enum": list(range(5000))}, ["4999", "5000"]) == [True, False]


# ----------------------------------------------------------------------------------------------
# Objects
# ----------------------------------------------------------------------------------------------


def test_properties_in_declared_order_required_and_optional():
    check(
        PERSON,
        [
            '{"name": "a"}',
            '{"name": "a", "tags": []}',
            '{"name": "a", "age": 1, "tags": ["x"]}',
            '{"name": "a", "zz": 1}',
        ],
        [
            '{"age": 1, "name": "a"}',
            '{"age": 1}',
            '{"name": 1}',
            '{"name": "a", "name": "b"}',
            '{"name": "a", "\\u0061ge": "x"}',
        ],
    )


def test_a_parent_that_only_requires_a_key_does_not_move_it_ahead_of_its_declaration():
    schema = {
        "required": ["id"],
        "anyOf": [
            {"type": "object", "properties": {"name": {}, "id": {"type": "integer"}}, "additionalProperties": False}
        ],
    }
    check(schema, ['{"name": "a", "id": 1}', '{"id": 1}'], ['{"id": 1, "name": "a"}', '{"name": "a"}'])


def test_additional_properties_false_and_schema():
    closed = {**PERSON, "additionalProperties": False}
    check(closed, ['{"name": "a", "age": 2}'], ['{"name": "a", "x": 1}'])
    typed = {**PERSON, "additionalProperties": {"type": "integer"}}
    check(typed, ['{"name": "a", "x": 1, "y": 2}'], ['{"name": "a", "x": "1"}', '{"name": "a", "\\u006eame": 1}'])


def test_pattern_properties_overlap_exactly():
    schema = {
        "type": "object",
        "patternProperties": {"^a": {"type": "integer"}, "b$": {"type": "number", "minimum": 10}},
        "additionalProperties": {"type": "string"},
    }
    check(schema, ['{"ab": 10, "a": 1, "b": 11, "c": "x"}'], ['{"ab": 9}', '{"ab": 10.5}', '{"b": "x"}', '{"c": 1}'])


def test_property_names_and_counts():
    check(
        {"type": "object", "propertyNames": {"maxLength": 2}, "minProperties": 1, "maxProperties": 2},
        ['{"a": 1}', '{"ab": 1, "b": 2}'],
        ["{}", '{"abc": 1}', '{"a": 1, "b": 2, "c": 3}'],
    )
    check(
        {"type": "object", "properties": {"a": {}, "b": {}}, "maxProperties": 1},
        ['{"a": 1}', '{"b": 1}', '{"c": 1}', "{}"],
        ['{"a": 1, "b": 2}', '{"a": 1, "c": 2}'],
    )


def test_dependent_required_and_dependent_schemas():
    schema = {
        "type": "object",
        "properties": {"a": {}, "b": {}},
        "dependentRequired": {"b": ["a"]},
        "dependentSchemas": {"a": {"properties": {"c": {"type": "integer"}}}},
    }
    check(
        schema,
        ['{"a": 1, "b": 2}', '{"a": 1}', "{}", '{"a": 1, "c": 2}', '{"c": "x"}'],
        ['{"b": 2}', '{"a": 1, "c": "x"}'],
    )


# ----------------------------------------------------------------------------------------------
# Arrays
# ----------------------------------------------------------------------------------------------


def test_prefix_items_items_and_counters():
    schema = {
        "type": "array",
        "prefixItems": [{"type": "integer"}, {"type": "string"}],
        "items": {"type": "boolean"},
        "maxItems": 3,
    }
    check(schema, ["[]", "[1]", '[1, "a"]', '[1, "a", true]'], ['["a"]', '[1, "a", true, false]', '[1, "a", 2]'])
    assert len(schema_grammar({"type": "array", "maxItems": 100_000}).rules) < 20


def test_contains_with_counts():
    schema = {
        "type": "array",
        "items": {"type": "integer"},
        "contains": {"minimum": 10},
        "minContains": 2,
        "maxContains": 3,
    }
    check(schema, ["[10, 11]", "[1, 10, 2, 11, 12]"], ["[10]", "[]", "[10, 11, 12, 13]", "[1, 2]"])


def test_unique_items_over_a_finite_domain():
    check(
        {"type": "array", "items": {"enum": ["a", "b", 1]}, "uniqueItems": True},
        ['["a", 1]', "[]", '["b", "a", 1]'],
        ['["a", "a"]', '[1, "b", 1]'],
    )
    check({"type": "array", "items": {"type": "integer"}, "maxItems": 1, "uniqueItems": True}, ["[1]"], ["[1, 1]"])


def test_unique_items_over_an_infinite_domain_is_refused_or_warned():
    schema = {"type": "array", "items": {"type": "string"}, "uniqueItems": True}
    with pytest.raises(UnsupportedSchemaError) as info:
        schema_grammar(schema)
    assert info.value.keyword == "uniqueItems" and info.value.pointer == ""
    with pytest.warns(UnsupportedSchemaWarning, match="uniqueItems"):
        schema_grammar(schema, lenient=True)


# ----------------------------------------------------------------------------------------------
# Combinators
# ----------------------------------------------------------------------------------------------


def test_all_of_merges_exactly():
    schema = {
        "allOf": [
            {
                "type": "object",
                "properties": {"a": {"type": "integer"}},
                "required": ["a"],
                "additionalProperties": False,
            },
            {"properties": {"a": {"minimum": 3}, "b": {}}},
        ]
    }
    check(schema, ['{"a": 3}'], ['{"a": 2}', '{"a": 3, "b": 1}'])


def test_one_of_disjoint_by_discriminator_and_exact_by_complement():
    tagged = {
        "oneOf": [
            {"type": "object", "properties": {"kind": {"const": "a"}, "x": {"type": "integer"}}, "required": ["kind"]},
            {"type": "object", "properties": {"kind": {"const": "b"}}, "required": ["kind"]},
        ]
    }
    check(tagged, ['{"kind": "a", "x": 1}', '{"kind": "b"}'], ['{"kind": "c"}', '{"kind": "a", "x": "1"}'])
    check({"oneOf": [{"type": "integer"}, {"minimum": 2}]}, ["1", "2.5", '"x"'], ["2", "1.5"])


def test_overlapping_one_of_of_closed_objects_is_exact():
    schema = {
        "oneOf": [
            {"type": "object", "additionalProperties": False, "properties": {"a": {}}},
            {"type": "object", "additionalProperties": False, "properties": {"b": {}}},
        ]
    }
    check(schema, ['{"a": 1}', '{"b": 2}'], ["{}", '{"a": 1, "b": 2}', '{"c": 1}'])


def test_not_of_pattern_properties_needs_some_key_to_fail():
    schema = {"type": "object", "not": {"patternProperties": {"^x-": {"type": "string"}}}}
    check(schema, ['{"x-a": 1}', '{"b": "s", "x-a": "s", "x-c": null}'], ["{}", '{"x-a": "s"}', '{"b": 1}'])


def test_unevaluated_properties_keep_the_clauses_of_a_not():
    schema = {"not": {"additionalProperties": {"type": "string"}}, "unevaluatedProperties": True}
    check(schema, ['{"a": 1}', '{"a": "s", "b": null}'], ["{}", '{"a": "s"}', "3"])


def test_names_with_a_lone_surrogate_are_typed_errors_or_unwritable():
    with pytest.raises(SchemaError, match="lone surrogate"):
        schema_grammar({"properties": {"\ud800": {}}})
    # A required key no UTF-8 text can spell: no object qualifies, other values still do.
    check(
        {"required": ["\ud800"]},
        ["1", '"x"'],
        ["{}", '{"\\ud800": 1}', '{"\ud800": 1}'.encode("utf-8", "surrogatepass").decode("latin-1")],
    )


def test_overlapping_one_of_without_complement_is_refused_or_degrades():
    schema = {"oneOf": [{"type": "array", "uniqueItems": True}, {"type": "array", "maxItems": 2}]}
    with pytest.raises(UnsupportedSchemaError) as info:
        schema_grammar(schema)
    assert info.value.keyword == "oneOf"
    with pytest.warns(UnsupportedSchemaWarning):
        assert accepts(
            {
                "oneOf": [
                    {"type": "array", "uniqueItems": True, "items": {"type": "boolean"}},
                    {"type": "array", "maxItems": 2},
                ]
            },
            ["[true]"],
            lenient=True,
        ) == [True]


def test_not_and_if_then_else():
    check({"not": {"type": ["string", "null"]}}, ["1", "[]"], ['"a"', "null"])
    check({"type": "object", "not": {"required": ["a"]}}, ["{}", '{"b": 1}'], ['{"a": 1}'])
    conditional = {
        "if": {"properties": {"kind": {"const": "n"}}, "required": ["kind"]},
        "then": {"properties": {"v": {"type": "number"}}},
        "else": {"properties": {"v": {"type": "string"}}},
    }
    check(
        conditional,
        ['{"kind": "n", "v": 1}', '{"kind": "s", "v": "x"}', '{"v": "x"}'],
        ['{"kind": "n", "v": "x"}', '{"v": 1}'],
    )


# ----------------------------------------------------------------------------------------------
# References
# ----------------------------------------------------------------------------------------------


def test_recursive_refs_become_recursive_rules():
    schema = {
        "$defs": {
            "node": {
                "type": "object",
                "properties": {"v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
                "required": ["v"],
            }
        },
        "$ref": "#/$defs/node",
    }
    check(schema, ['{"v": 1, "kids": [{"v": 2, "kids": [{"v": 3}]}]}'], ['{"v": 1, "kids": [{}]}'])


def test_ids_anchors_and_remote_resources():
    schema = {
        "$id": "https://example.com/root.json",
        "properties": {"a": {"$ref": "other.json#/$defs/x"}, "b": {"$ref": "#here"}},
        "$defs": {"h": {"$anchor": "here", "type": "boolean"}},
    }
    resources = {"https://example.com/other.json": {"$defs": {"x": {"type": "integer"}}}}
    assert accepts(schema, ['{"a": 1, "b": true}', '{"a": "1"}', '{"b": 1}'], resources=resources) == [
        True,
        False,
        False,
    ]
    with pytest.raises(SchemaError, match="remote documents are not fetched") as info:
        schema_grammar(schema)
    assert info.value.pointer == "/properties/a/$ref"


def test_deep_reference_chains_and_nesting_compile():
    chain = {"$defs": {f"d{i}": {"$ref": f"#/$defs/d{i + 1}"} for i in range(10_000)}, "$ref": "#/$defs/d0"}
    chain["$defs"]["d10000"] = {"type": "integer"}
    assert accepts(chain, ["1", '"a"']) == [True, False]
    nested: dict = {"type": "integer"}
    for _ in range(2_000):
        nested = {"type": "object", "properties": {"a": nested}, "required": ["a"]}
    assert len(schema_grammar(nested).rules) > 2_000


def test_self_reference_without_progress_is_a_schema_error():
    with pytest.raises(SchemaError, match="cycle"):
        schema_grammar({"$ref": "#"})


# ----------------------------------------------------------------------------------------------
# Errors and limits
# ----------------------------------------------------------------------------------------------


def test_malformed_keywords_are_schema_errors_with_pointers():
    with pytest.raises(SchemaError) as info:
        schema_grammar({"properties": {"a": {"minLength": -1}}})
    assert info.value.pointer == "/properties/a/minLength"
    with pytest.raises(SchemaError, match="no anchor"):
        schema_grammar({"$ref": "#nowhere"})
    with pytest.raises(SchemaError, match="does not exist"):
        schema_grammar({"$ref": "#/$defs/missing"})
    with pytest.raises(SchemaError):
        schema_grammar([])  # type: ignore[arg-type]


def test_unknown_keywords_are_annotations_but_misspellings_and_refused_keywords_fail():
    assert accepts({"type": "integer", "x-unit": "cm", "markdownDescription": "d", "self": {"vendor": "v"}}, ["1"]) == [
        True
    ]
    for keyword, value in (("maxLenght", 3), ("enums", [1]), ("$dynamicRef", "#x")):
        with pytest.raises(UnsupportedSchemaError) as info:
            schema_grammar({"properties": {"a": {keyword: value}}})
        assert info.value.keyword == keyword and info.value.pointer == "/properties/a"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert accepts({"type": "string", "maxLenght": 3}, ['"abcd"'], lenient=True) == [True]
    assert any(issubclass(w.category, UnsupportedSchemaWarning) for w in caught)


def test_unenforceable_patterns_and_formats_are_refused():
    with pytest.raises(UnsupportedSchemaError) as info:
        schema_grammar({"properties": {"a": {"pattern": "(?<=a)b"}}})
    assert info.value.keyword == "pattern" and info.value.pointer == "/properties/a"
    with pytest.raises(UnsupportedSchemaError, match="unknown format"):
        schema_grammar({"type": "string", "format": "no-such-format"})


def test_alternative_blowups_are_limit_errors():
    schema = {
        "allOf": [
            {"anyOf": [{"type": "object", "required": [f"a{i}"]}, {"type": "object", "required": [f"b{i}"]}]}
            for i in range(12)
        ]
    }
    with pytest.raises(ConstraintLimitError):
        schema_grammar(schema)


def test_token_masks_allow_the_real_tokenization_of_a_valid_text(vocab, hf_tokenizer):
    import grammars

    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 20},
            "age": {"type": "integer", "maximum": 150},
            "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "uniqueItems": True},
        },
        "required": ["name"],
        "additionalProperties": {"type": "number"},
    }
    matcher = grammars.compile(schema).matcher(vocab)
    for token_id in hf_tokenizer.encode(
        '{"name": "Ada Lovelace", "age": 36, "tags": ["b", "a"], "x": 1.5}', add_special_tokens=False
    ).ids:
        assert bool(matcher.mask()[token_id]), hf_tokenizer.decode([token_id])
        matcher.advance(token_id)
    assert matcher.is_accepting()
