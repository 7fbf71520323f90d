"""describe_schema and describe_output: the form a model reads, bounded for large outputs."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, TypeAdapter

import grammars
from sdk.outputs import output_spec
from sdk.schema_text import MAX_DESCRIPTION_CHARS, describe_output, describe_schema


class Address(BaseModel):
    city: str
    zip_code: str | None = None


class Person(BaseModel):
    name: str = Field(description="full  name\nas written")
    role: Literal["admin", "user"]
    tags: list[str]
    home: Address


def test_a_model_becomes_its_json_shape_with_refs_expanded() -> None:
    assert describe_schema(TypeAdapter(Person).json_schema()) == (
        "{\n"
        '  "name": string,  // full name as written\n'
        '  "role": "admin" | "user",\n'
        '  "tags": [string, ...],\n'
        '  "home": {\n'
        '    "city": string,\n'
        '    "zip_code": string | null  // optional\n'
        "  }\n"
        "}"
    )


def test_recursive_refs_are_named_not_expanded_forever() -> None:
    schema = {
        "$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}},
        "$ref": "#/$defs/Node",
    }
    assert describe_schema(schema) == '{\n  "next": Node  // optional\n}'


def test_scalars_and_free_forms() -> None:
    assert describe_schema({"type": "integer"}) == "integer"
    assert describe_schema(True) == "any"
    assert describe_schema({"type": "object", "additionalProperties": {"type": "number"}}) == "{string: number}"
    assert describe_schema({"type": ["string", "null"]}) == "string | null"
    assert describe_schema({"prefixItems": [{"type": "integer"}, {"type": "string"}], "type": "array"}) == (
        "[integer, string]"
    )


def tree_grammar(num_rules: int) -> str:
    """A grammar of `num_rules` rules in a binary tree under `start`, each with its own terminal, and
    one rule no other reaches, written first."""
    lines = ['unreached: "never"', "start: rule_0"]
    for i in range(num_rules):
        children = "".join(f" rule_{j}?" for j in (2 * i + 1, 2 * i + 2) if j < num_rules)
        lines += [f'rule_{i}: "item {i:03d} " WORD_{i}{children}', f"WORD_{i}: /[a-z]{{1,{i % 7 + 1}}}/"]
    return "\n".join(lines) + '\n%ignore " "\n'


def test_a_large_grammar_is_summarized_from_its_start_rule() -> None:
    text = tree_grammar(300)
    assert len(text) > 15_000
    description = describe_output(output_spec(grammars.Lark(text)))
    assert description is not None and len(description) <= MAX_DESCRIPTION_CHARS
    head, *shown, note = description.split("\n")
    assert head == "Respond with text in this grammar (Lark syntax, start rule 'start'):"
    assert shown[:4] == [
        "start: rule_0",
        '%ignore " "',
        'rule_0: "item 000 " WORD_0 rule_1? rule_2?',
        "WORD_0: /[a-z]{1,1}/",
    ]
    assert 'rule_2: "item 002 " WORD_2 rule_5? rule_6?' in shown and "unreached" not in description  # breadth first
    num_definitions = 2 + 2 * 300
    num_omitted = num_definitions - (len(shown) - 1)  # all but the directive are definitions
    assert note == f"... ({num_omitted} more rules and terminals; the constraint enforces the full grammar)"


def test_a_small_grammar_is_written_whole() -> None:
    text = 'start: WORD ("," WORD)*\n// a comment\nWORD: /[a-z]+/\n'
    assert describe_output(output_spec(grammars.Lark(text))) == (
        f"Respond with text in this grammar (Lark syntax, start rule 'start'):\n{text}"
    )


def test_a_grammar_whose_start_rule_alone_is_too_long_shows_its_beginning() -> None:
    options = " | ".join(f'"option number {i}"' for i in range(400))
    description = describe_output(output_spec(grammars.Lark(f"start: {options}\n")))
    assert description is not None and len(description) <= MAX_DESCRIPTION_CHARS
    assert '\nstart: "option number 0" | ' in description
    assert description.endswith(" ...\n... (0 more rules and terminals; the constraint enforces the full grammar)")


def test_a_huge_schema_is_abridged_to_the_bound() -> None:
    names = [f"field_{i}" for i in range(500)]
    schema = {
        "type": "object",
        "properties": {name: {"type": "string", "description": f"the {name}"} for name in names},
        "required": names,
    }
    description = describe_output(output_spec(schema))
    assert description is not None and len(description) <= MAX_DESCRIPTION_CHARS
    assert description.startswith('Respond with JSON of this form:\n{\n  "field_0": string,  // the field_0\n')
    shown = [name for name in names if f'"{name}"' in description]
    assert shown == names[: len(shown)] and len(shown) >= 10
    assert f"  // ... {500 - len(shown)} more properties\n}}" in description
    assert description.endswith("\n(abridged; the constraint enforces the full schema)")


def test_nesting_is_cut_before_fields() -> None:
    inner = {"type": "object", "properties": {f"inner_{i}": {"type": "integer"} for i in range(40)}}
    schema = {"type": "object", "properties": {f"outer_{i}": inner for i in range(30)}}
    text = describe_schema(schema, max_chars=MAX_DESCRIPTION_CHARS)
    assert len(text) <= MAX_DESCRIPTION_CHARS and "inner_" not in text
    assert all(f'"outer_{i}": object' in text for i in range(30))


def test_refs_that_expand_to_a_huge_shape_stay_bounded() -> None:
    # Each level has 12 fields of the next: written out, 12**6 lines.
    defs = {
        f"L{level}": {"type": "object", "properties": {f"f{i}": {"$ref": f"#/$defs/L{level + 1}"} for i in range(12)}}
        for level in range(8)
    }
    text = describe_schema({"$defs": defs, "$ref": "#/$defs/L0"}, max_chars=500)
    assert len(text) <= 500 and text.endswith("(abridged; the constraint enforces the full schema)")


def test_long_options_and_patterns_are_cut_with_a_note() -> None:
    options = [f"option-{i}" for i in range(1_000)]
    choice = describe_output(output_spec(grammars.Choice(options)))
    assert choice is not None and len(choice) <= MAX_DESCRIPTION_CHARS
    assert choice.startswith("Respond with exactly one of: option-0, option-1, ")
    num_shown = sum(f" {option}," in choice or f" {option}." in choice for option in options)
    assert choice.endswith(f", ... ({1_000 - num_shown} more; the constraint enforces the full list).")
    pattern = "|".join(f"word{i}" for i in range(1_000))
    regex = describe_output(output_spec(grammars.Regex(pattern)))
    assert regex is not None and len(regex) <= MAX_DESCRIPTION_CHARS
    assert regex.startswith("Respond with text that matches the regular expression word0|word1|")
    assert regex.endswith(" ... (cut; the constraint enforces the full pattern)")
    assert describe_output(output_spec(grammars.Regex("[0-9]+"))) == (
        "Respond with text that matches the regular expression [0-9]+"
    )


def test_indented_definitions_are_summarized_too() -> None:
    text = "\n".join(f"  {line}" for line in tree_grammar(100).splitlines())
    description = describe_output(output_spec(grammars.Lark(text)))
    assert description is not None and len(description) <= MAX_DESCRIPTION_CHARS
    assert description.split("\n")[1:3] == ["  start: rule_0", '  %ignore " "']


def test_a_list_of_items_is_a_tuple() -> None:
    schema = {"type": "array", "items": [{"type": "integer"}, {"type": "string"}]}
    assert describe_schema(schema) == "[integer, string]"
    assert describe_schema({"type": "array", "items": [], "additionalItems": {"type": "number"}}) == "[number, ...]"
