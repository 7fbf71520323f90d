"""Distinct keys in JSON objects: `accepts()`, masks over the real SmolLM2 vocabulary, forks, budgets,
and a greedy generation on the real model (the issue's repro: six "table" keys)."""

from __future__ import annotations

import asyncio
import json
import random

import numpy as np
import pytest
from pydantic import BaseModel

import grammars
from grammars.errors import TokenRejectedError


class Inventory(BaseModel):
    counts: dict[str, int]


ENUM_KEYS = {"type": "object", "propertyNames": {"enum": ["a", "b"]}, "additionalProperties": {"type": "integer"}}
PATTERN_KEYS = {
    "type": "object",
    "patternProperties": {"^x[0-2]$": {"type": "integer"}},
    "additionalProperties": False,
}
DECLARED_AND_MORE = {
    "type": "object",
    "properties": {"id": {"type": "integer"}},
    "required": ["id"],
    "additionalProperties": {"type": "integer"},
}
NESTED = {"type": "object", "additionalProperties": {"type": "object", "additionalProperties": {"type": "integer"}}}


def distinct(text: bytes) -> bool:
    """Whether every object of the JSON `text` has distinct keys (compared decoded)."""

    def check(pairs: list[tuple[str, object]]) -> dict:
        if len({key for key, _ in pairs}) < len(pairs):
            raise ValueError("repeated key")
        return dict(pairs)

    try:
        json.loads(text, object_pairs_hook=check)
    except ValueError:
        return False
    return True


def token(vocab, data: bytes) -> int:
    return vocab.token_bytes.index(data)


def matcher_after(constraint, vocab, text: bytes):
    """A matcher advanced byte by byte through `text` (single-byte tokens: no tokenizer choice)."""
    matcher = constraint.matcher(vocab)
    for byte in text:
        matcher.advance(token(vocab, bytes([byte])))
    return matcher


@pytest.mark.parametrize(
    ("spec", "text", "expected"),
    [
        (Inventory, '{"counts":{"table":12,"table":4}}', False),
        (Inventory, '{"counts":{"table":12,"chair":4}}', True),
        (Inventory, '{"counts":{"a":1,"\\u0061":2}}', False),  # one key, two spellings
        (Inventory, '{"counts":{"\\u00e9":1,"\\u00E9":2}}', False),
        (Inventory, '{"counts":{"a":1,"A":2}}', True),
        (NESTED, '{"a":{"a":1},"b":{"a":2}}', True),  # each object has its own keys
        (NESTED, '{"a":{"x":1},"b":{"y":2},"a":{}}', False),
        (DECLARED_AND_MORE, '{"id":1,"x":2,"y":3}', True),
        (DECLARED_AND_MORE, '{"id":1,"x":2,"x":3}', False),
        (DECLARED_AND_MORE, '{"id":1,"\\u0069d":2}', False),  # a spelling of a declared key
        (ENUM_KEYS, '{"b":1,"a":2}', True),
        (ENUM_KEYS, '{"a":1,"b":2,"a":3}', False),
        (PATTERN_KEYS, '{"x2":1,"x0":2,"x1":3}', True),
        (PATTERN_KEYS, '{"x2":1,"\\u00782":2}', False),
        ({"type": "array", "items": Inventory.model_json_schema()}, '[{"counts":{"a":1}},{"counts":{"a":1}}]', True),
    ],
)
def test_accepts_rejects_repeated_keys(spec, text: str, expected: bool) -> None:
    assert grammars.compile(spec).accepts(text) is expected


def test_other_grammars_keep_their_language() -> None:
    """Only JSON Schema grammars promise JSON objects; a Lark grammar's text is its own."""
    lark = grammars.compile(grammars.Lark('start: "{\\"a\\":1,\\"a\\":2}"'))
    assert lark.accepts('{"a":1,"a":2}')


def test_mask_refuses_the_token_that_repeats_a_key(vocab) -> None:
    matcher = matcher_after(grammars.compile(Inventory), vocab, b'{"counts":{"table":12,"table')
    mask = matcher.mask()
    for data in (b'"', b'":', b'":"'):
        assert not mask[token(vocab, data)], data
    assert mask[token(vocab, b"s")]  # "tables" is a fresh key
    with pytest.raises(TokenRejectedError):
        matcher.advance(token(vocab, b'":'))
    matcher.advance(token(vocab, b"s"))
    assert matcher.mask()[token(vocab, b'":')]


def test_multibyte_tokens_across_a_key_start(vocab) -> None:
    """A token that opens and closes a key at once where the object has keys (`""`) goes through
    the restricted lexer state."""
    constraint = grammars.compile(Inventory)
    assert matcher_after(constraint, vocab, b'{"counts":{"a":1,').mask()[token(vocab, b'""')]
    matcher = matcher_after(constraint, vocab, b'{"counts":{"":1,')
    mask = matcher.mask()
    assert not mask[token(vocab, b'""')]
    assert mask[token(vocab, b'"')]
    with pytest.raises(TokenRejectedError):
        matcher.advance(token(vocab, b'""'))


def test_restricted_keys_close_the_object_instead_of_a_dead_end(vocab) -> None:
    constraint = grammars.compile(ENUM_KEYS)
    matcher = matcher_after(constraint, vocab, b'{"a":1,"')
    mask = matcher.mask()
    assert not mask[token(vocab, b"a")]  # only "a" completes: a dead end
    assert mask[token(vocab, b"b")]
    matcher = matcher_after(constraint, vocab, b'{"a":1,"b":2')
    mask = matcher.mask()
    assert not mask[token(vocab, b",")]  # no fresh key is left
    assert mask[token(vocab, b"}")]


@pytest.mark.parametrize(
    ("options", "separator", "colon"),
    [({"whitespace": "spaced"}, b", ", b": "), ({"indent": 2}, b",\n  ", b": ")],
)
def test_separator_with_whitespace_refuses_a_comma_when_no_fresh_key_is_left(options, separator, colon, vocab) -> None:
    """The key comes a whitespace lexeme after the comma: the comma itself must see there is none."""
    constraint = grammars.compile(grammars.Schema(ENUM_KEYS, **options))
    opening = b"{\n  " if "indent" in options else b"{"
    partial = matcher_after(constraint, vocab, opening + b'"a"' + colon + b"1")
    assert partial.mask()[token(vocab, b",")]  # "b" is still fresh
    full = matcher_after(constraint, vocab, opening + b'"a"' + colon + b"1" + separator + b'"b"' + colon + b"2")
    assert not full.mask()[token(vocab, b",")]
    assert not full.try_advance(token(vocab, b","))


def test_pattern_keys_exhausted(vocab) -> None:
    constraint = grammars.compile(PATTERN_KEYS)
    matcher = matcher_after(constraint, vocab, b'{"x0":1,"x')
    mask = matcher.mask()
    assert not mask[token(vocab, b"0")] and mask[token(vocab, b"1")]
    full = matcher_after(constraint, vocab, b'{"x0":1,"x1":2,"x2":3')
    assert not full.mask()[token(vocab, b",")]
    assert full.mask()[token(vocab, b"}")]


def test_fork_copies_the_keys(vocab) -> None:
    constraint = grammars.compile(Inventory)
    matcher = matcher_after(constraint, vocab, b'{"counts":{"table":1,')
    twin = matcher.fork()
    for byte in b'"chair":2,"':
        twin.advance(token(vocab, bytes([byte])))
    matcher.advance(token(vocab, b'"'))
    for byte in b"chair":
        twin.advance(token(vocab, bytes([byte])))
        matcher.advance(token(vocab, bytes([byte])))
    assert matcher.mask()[token(vocab, b'"')]  # the original never wrote "chair"
    assert not twin.mask()[token(vocab, b'"')]


@pytest.mark.parametrize("spec", [Inventory, ENUM_KEYS, PATTERN_KEYS, DECLARED_AND_MORE, NESTED])
def test_random_walks_end_with_distinct_keys(spec, vocab) -> None:
    """Tokens drawn at random from each mask (favouring quotes and commas, under a token budget):
    every drawn token advances, no mask is empty, and each finished text is valid with distinct keys."""
    constraint = grammars.compile(spec)
    eos = np.zeros(vocab.size, dtype=bool)
    eos[list(vocab.eos_token_ids)] = True
    keyish = np.array([bool(data) and (b'"' in data or b"," in data) for data in vocab.token_bytes], dtype=bool)
    finished = 0
    for seed in range(6):
        rng = random.Random(seed)
        matcher = constraint.matcher(vocab)
        text = b""
        max_tokens = 30
        for used in range(max_tokens):
            allowed = matcher.mask(max_remaining_tokens=max_tokens - used).numpy()
            assert allowed.any(), text
            choices = np.flatnonzero(allowed & ~eos)
            if not choices.size:
                break
            favoured = np.flatnonzero(allowed & ~eos & keyish)
            pool = favoured if favoured.size and rng.random() < 0.7 else choices
            chosen = int(pool[rng.randrange(pool.size)])
            matcher.advance(chosen)
            text += vocab.token_bytes[chosen]
        if matcher.is_accepting():
            finished += 1
            assert constraint.accepts(text) and distinct(text), text
    assert finished >= 4


@pytest.mark.parametrize("name", ["a", "id", "name", "\u00e9t\u00e9", 'q"'])
def test_key_overlap_search_agrees_with_emptiness(name: str) -> None:
    """`rx.shares_string` (how key exclusion decides which lexemes a key's spellings touch) against
    the breadth-first emptiness search of the intersection, on the lexemes keys meet."""
    from grammars.core import byte_regex as rx
    from grammars.frontends.json_schema.strings import string_lexeme, value_encodings

    spellings = string_lexeme(value_encodings(name))
    any_string = string_lexeme(rx.star(rx.alt(value_encodings("a"), value_encodings("\u00e9"), value_encodings('"'))))
    lexemes = [
        rx.literal(b'"id"'),
        rx.literal(b'"name":'),
        any_string,
        rx.difference(any_string, string_lexeme(value_encodings("a"))),
        rx.difference(any_string, spellings),
        string_lexeme(rx.concat(rx.literal(b"q"), rx.ANYTHING)),
    ]
    for lexeme in lexemes:
        expected = rx.is_empty(rx.intersect(lexeme, spellings)) is False
        assert rx.shares_string(lexeme, spellings) is expected, (name, lexeme)


def tally(counts: dict[str, int]) -> str:
    """Record counts."""
    return str(counts)


def call(arguments: str) -> str:
    from sdk.tools import render_call

    return render_call("tally", arguments)


def tool_constraint(choice: str, answer=None):
    from sdk.tools import resolve_tool_choice, tool_call_constraint, toolset

    tools = toolset([tally])
    return tool_call_constraint(tools, resolve_tool_choice(choice, tools), parallel=True, answer=answer)


TWICE = '{"counts": {"a": 1, "a": 2}}'
ONCE = '{"counts": {"a": 1, "b": 2}}'


@pytest.mark.parametrize("choice", ["required", "tally", "auto"])
def test_tool_arguments_keep_distinct_keys(choice: str) -> None:
    constraint = tool_constraint(choice)
    assert constraint.accepts(call(ONCE))
    assert not constraint.accepts(call(TWICE))
    if choice != "tally":  # two calls: each arguments object has its own keys
        assert constraint.accepts(call(ONCE) + "\n" + call(ONCE))
        assert not constraint.accepts(call(ONCE) + "\n" + call(TWICE))


@pytest.mark.parametrize(
    ("answer", "text", "expected"),
    [
        (None, TWICE, True),  # free text is not JSON: nothing to keep distinct
        (grammars.Regex(r'[{}":a-z0-9, ]+'), TWICE, True),
        (Inventory, '{"counts":{"a":1}}', True),
        (Inventory, '{"counts":{"a":1,"a":2}}', False),
    ],
)
def test_tool_auto_answers_keep_their_own_rule(answer, text: str, expected: bool) -> None:
    constraint = tool_constraint("auto", None if answer is None else grammars.compile(answer))
    assert constraint.accepts(text) is expected
    assert constraint.accepts(call(ONCE)) and not constraint.accepts(call(TWICE))


def test_tool_auto_with_a_marked_answer() -> None:
    """An answer whose JSON begins after a marker, beside calls whose JSON begins after theirs."""
    from grammars.compose import marker_then_answer

    constraint = tool_constraint("auto", marker_then_answer(grammars.compile(Inventory), "Answer:"))
    assert constraint.accepts('Answer: {"counts":{"a":1,"b":2}}')
    assert not constraint.accepts('Answer: {"counts":{"a":1,"a":2}}')
    assert constraint.accepts(call(ONCE)) and not constraint.accepts(call(TWICE))


def test_tool_masks_refuse_a_repeated_argument_key(vocab) -> None:
    from sdk.tools import render_call

    head = render_call("tally", '{"counts": {"a": 1, "a').rsplit("}", 1)[0].encode("utf-8")
    assert head.endswith(b'"a": 1, "a')
    for choice in ("required", "auto"):
        mask = matcher_after(tool_constraint(choice), vocab, head).mask()
        assert not mask[token(vocab, b'"')] and mask[token(vocab, b"b")]
    free = matcher_after(tool_constraint("auto"), vocab, b'{"a": 1, "a').mask()
    assert free[token(vocab, b'"')]  # free text


@pytest.mark.parametrize("separator", ["", " "])
def test_reasoning_then_a_json_answer_keeps_distinct_keys(separator: str, vocab) -> None:
    from grammars.compose import marker_then_answer, reasoning_then_answer

    constraint = reasoning_then_answer(grammars.compile(Inventory), "\nAnswer:", separator=separator)
    assert not constraint.automaton.keys_may_run_out  # the answer's, whose keys never run out
    reasoning = 'I saw {"table": 1, "table": 2} and "a", "a".\nAnswer:' + separator
    assert constraint.accepts(reasoning + '{"counts":{"table":1,"chair":2}}')
    assert not constraint.accepts(reasoning + '{"counts":{"table":1,"table":2}}')
    matcher = matcher_after(constraint, vocab, (reasoning + '{"counts":{"table":1,"table').encode("utf-8"))
    assert not matcher.mask()[token(vocab, b'"')]
    tail = marker_then_answer(grammars.compile(Inventory), "\nAnswer:", separator=separator)
    assert not tail.accepts("\nAnswer:" + separator + '{"counts":{"a":1,"a":2}}')
    assert tail.accepts("\nAnswer:" + separator + '{"counts":{"a":1,"b":2}}')


def test_reasoning_separator_that_opens_json_is_refused() -> None:
    from grammars.compose import reasoning_then_answer
    from grammars.errors import GrammarError

    with pytest.raises(GrammarError, match="separator"):
        reasoning_then_answer(grammars.compile(Inventory), "Answer:", separator="[")
    lark = reasoning_then_answer(grammars.compile(grammars.Regex(r"\[.*")), "Answer:", separator="[")
    assert lark.accepts('Answer:[{"a":1,"a":2}')  # not JSON Schema: no key rule


@pytest.mark.slow
def test_greedy_inventory_on_the_real_model() -> None:
    """The issue's repro: greedy SmolLM2 wrote six "table" keys into `dict[str, int]`."""
    from sdk import LLM

    async def main() -> tuple[Inventory, str]:
        llm = LLM()
        try:
            result = await llm.run(
                "List the furniture in a living room with how many of each: tables, chairs, sofas, lamps.",
                output=Inventory,
                max_tokens=200,
            )
        finally:
            await llm.aclose()
        return result.value, result.text

    value, text = asyncio.run(main())
    assert isinstance(value, Inventory)
    assert distinct(text.encode("utf-8")), text
    assert grammars.compile(Inventory).accepts(text)
