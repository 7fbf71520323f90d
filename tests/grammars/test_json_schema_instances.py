"""Canonical instance texts: the spelling of a value that the schema's grammar emits."""

import json

from grammars.compiler import compile_grammar
from grammars.frontends.json_schema import CanonicalWriter, canonical_json, schema_grammar

SCHEMA = {
    "type": "object",
    "properties": {"b": {"type": "integer"}, "a": {"type": "array", "items": {"$ref": "#/$defs/p"}}},
    "$defs": {"p": {"type": "object", "properties": {"y": {}, "x": {}}}},
}


def test_keys_follow_the_declared_order_at_every_level():
    value = {"a": [{"x": 1, "y": 2}], "z": True, "b": 1.0}
    assert canonical_json(SCHEMA, value) == '{"b": 1, "a": [{"y": 2, "x": 1}], "z": true}'
    assert canonical_json(SCHEMA, value, whitespace="compact") == '{"b":1,"a":[{"y":2,"x":1}],"z":true}'
    assert canonical_json(SCHEMA, value, indent=2) == json.dumps({"b": 1, "a": [{"y": 2, "x": 1}], "z": True}, indent=2)


def test_canonical_texts_are_accepted_by_the_grammar():
    writer = CanonicalWriter(SCHEMA)
    constraint = compile_grammar(schema_grammar(SCHEMA))
    for value in ({"a": [{"x": 1e-05, "y": "é"}]}, {"b": -3, "q": [1.5, None]}, {}):
        assert constraint.accepts(writer.text(value)), writer.text(value)


def test_literals_keep_their_own_order_and_numbers_are_plain():
    schema = {"enum": [{"k": 1, "j": 2}]}
    assert canonical_json(schema, {"j": 2, "k": 1}) == '{"k": 1, "j": 2}'
    assert canonical_json({}, [1e-05, 2.0, 10**20]) == "[0.00001, 2, 100000000000000000000]"
