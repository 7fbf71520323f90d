"""Composed constraints: free reasoning, the marker, then the answer's language."""

from __future__ import annotations

import pytest

import grammars
from grammars.compose import marker_then_answer, reasoning_then_answer, text_then_marker
from grammars.core import byte_regex as rx

MARKER = "\nAnswer:"


@pytest.mark.parametrize(
    ("text", "accepted"),
    [
        ("Because 6 x 7 = 42.\nAnswer: 42", True),
        ("\nAnswer:42", True),
        ("Multi\nline, ünïcödé 🙂 reasoning.\nAnswer: -7", True),
        ("Answer: 42 mid-line is still reasoning.\nAnswer: 1", True),
        ("no marker 42", False),
        ("x\nAnswer: 4\nAnswer: 2", False),
        ("x\nAnswer:  42", False),
        ("x\nAnswer: 42 ", False),
        ("x\nAnswer: forty-two", False),
    ],
)
def test_reasoning_then_a_regex_answer(text: str, accepted: bool) -> None:
    constraint = reasoning_then_answer(grammars.compile(grammars.Regex(r"-?[0-9]+")), MARKER)
    assert constraint.accepts(text) is accepted


def test_the_answer_keeps_its_own_rules_and_ignores() -> None:
    lark = grammars.Lark('start: "(" NUMBER ")"\n%import common.NUMBER\n%import common.WS\n%ignore WS')
    constraint = reasoning_then_answer(grammars.compile(lark), MARKER, separator="")
    assert constraint.accepts("think\nAnswer:( 12 )")
    assert not constraint.accepts("think\nAnswer:(12")


def test_reasoning_must_be_utf8_and_the_marker_must_be_given() -> None:
    term = text_then_marker(MARKER)
    assert rx.matches(term, "é\nAnswer:".encode())
    assert not rx.matches(term, b"\xff\nAnswer:")
    with pytest.raises(grammars.GrammarError):
        text_then_marker("")


def test_matcher_allows_long_reasoning_and_no_end_before_the_answer(vocab: grammars.Vocabulary) -> None:
    constraint = reasoning_then_answer(grammars.compile(grammars.Choice(["yes", "no"])), MARKER)
    matcher = constraint.matcher(vocab)
    reasoning_ids = [i for i, data in enumerate(vocab.token_bytes[:5000]) if data and data.isalpha()][:300]
    for token_id in reasoning_ids:
        assert matcher.mask()[token_id]
        matcher.advance(token_id)
    eos = vocab.eos_token_ids[0]
    assert not matcher.mask()[eos]
    for token_id in vocab_ids(vocab, "\nAnswer: yes"):
        matcher.advance(token_id)
    assert matcher.mask()[eos] and matcher.is_accepting()


def vocab_ids(vocab: grammars.Vocabulary, text: str) -> list[int]:
    """Single-byte token ids spelling `text` (every byte is a token in a byte-level vocabulary)."""
    by_bytes = {data: token_id for token_id, data in enumerate(vocab.token_bytes) if data}
    return [by_bytes[bytes([byte])] for byte in text.encode()]


def test_marker_then_answer_is_the_tail_of_reasoning_then_answer() -> None:
    answer = grammars.compile(grammars.Choice(["yes", "no"]))
    forced = marker_then_answer(answer, MARKER)
    assert forced.accepts("\nAnswer: yes") and forced.accepts("\nAnswer:no")
    assert not forced.accepts("why\nAnswer: yes") and not forced.accepts("yes")
    free = reasoning_then_answer(answer, MARKER)
    assert free.accepts("partial marker \nAns" + "\nAnswer: yes")  # a budget cut mid-marker stays valid
    with pytest.raises(grammars.GrammarError):
        marker_then_answer(answer, "")
