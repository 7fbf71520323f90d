"""Reasoning, then answer: the composed constraint, and splitting a completion."""

from __future__ import annotations

from pydantic import BaseModel

import grammars
from sdk import reasoning
from sdk.outputs import output_spec
from tests.runtime.fakes import smollm2_tokenizer


class Answer(BaseModel):
    value: int


def test_the_constraint_frees_the_reasoning_and_constrains_the_answer() -> None:
    constraint = reasoning.reasoning_constraint(output_spec(Answer))
    assert constraint is reasoning.reasoning_constraint(output_spec(Answer))
    assert constraint.accepts('2 and 2 make 4, {"value": 3} is wrong.\nAnswer: {"value": 4}')
    assert constraint.accepts('\nAnswer:{"value": 4}')
    assert not constraint.accepts("Thinking.\nAnswer: four")
    assert not constraint.accepts('{"value": 4}')


def test_free_text_output_with_reasoning_takes_any_answer() -> None:
    constraint = reasoning.reasoning_constraint(output_spec(None))
    assert constraint.accepts("hmm\nAnswer: whatever, even\nAnswer: this")


def test_split_and_join_are_inverse() -> None:
    text = reasoning.join("Because.", '{"value": 4}')
    assert reasoning.split(text) == ("Because.", '{"value": 4}')
    assert reasoning.split("no marker") == ("no marker", None)
    assert reasoning.split("  Why?\nAnswer:42") == ("Why?", "42")


def test_a_spent_budget_forces_the_marker_then_the_answer() -> None:
    tokenizer = smollm2_tokenizer()
    vocab = grammars.Vocabulary.from_tokenizer(tokenizer)
    budgeted = reasoning.BudgetedReasoning(output_spec(Answer), max_reasoning_tokens=3)
    matcher = budgeted.matcher(vocab)
    let_id = tokenizer.encode("Let")[0]
    for token_id in tokenizer.encode("Let me see"):
        assert matcher.mask()[token_id]
        matcher.advance(token_id)
    assert not matcher.mask()[let_id]  # budget spent: only the marker may come now
    twin = matcher.fork()
    for token_id in tokenizer.encode('\nAnswer: {"value": 4}'):
        matcher.advance(token_id)
    assert matcher.is_accepting() and not twin.is_accepting()
    assert budgeted.accepts('Let me see\nAnswer: {"value": 4}')


def test_a_fork_advances_on_its_own() -> None:
    tokenizer = smollm2_tokenizer()
    vocab = grammars.Vocabulary.from_tokenizer(tokenizer)
    matcher = reasoning.BudgetedReasoning(output_spec(Answer), max_reasoning_tokens=3).matcher(vocab)
    for token_id in tokenizer.encode("Let me see"):
        matcher.mask()
        matcher.advance(token_id)
    matcher.mask()  # budget spent: the marker is forced
    newline = tokenizer.encode("\n")[0]
    twin = matcher.fork()
    matcher.advance(newline)
    assert twin.mask()[newline] and not matcher.mask()[newline]  # the twin still stands before the newline


def test_a_marker_written_in_time_ends_the_budget_count() -> None:
    tokenizer = smollm2_tokenizer()
    vocab = grammars.Vocabulary.from_tokenizer(tokenizer)
    matcher = reasoning.BudgetedReasoning(output_spec(Answer), max_reasoning_tokens=4).matcher(vocab)
    for token_id in tokenizer.encode('Ok\nAnswer: {"value": 12345}'):
        matcher.advance(token_id)
    assert matcher.is_accepting() and matcher.error is None
