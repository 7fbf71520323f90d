"""Decode and verify passes are batch invariant on the real model in its default mode (bfloat16, 4-bit
weights, compiled kernels): a sequence's logits are bitwise the same whatever shares the pass.

That is what makes speculative decoding's greedy output the plain output token for token (a k-token
verify pass scores each position as the one-token step would), and batched decoding equal to
decoding alone. Prefill passes are outside it: they run dense weights over the whole prompt.
"""

from __future__ import annotations

import pytest
import torch

import runtime
from runtime.model import kernels
from runtime.model.runner import ForwardBatch, ModelRunner

pytestmark = pytest.mark.slow

PROMPTS = [
    "Write one sentence about the sea.",
    "Give a person named Ada Lovelace, aged 36, as JSON.",
    "The date is 2024-05-17. Repeat the date, then say something about the weather in a long sentence.",
]


@pytest.fixture(scope="module")
def engine() -> runtime.Engine:
    assert kernels.has_compiled_kernels(), kernels.KERNELS_UNAVAILABLE_REASON
    return runtime.load()


@pytest.fixture(scope="module")
def runner(engine: runtime.Engine) -> ModelRunner:
    return engine.runner


@pytest.fixture(scope="module")
def prompts(engine: runtime.Engine) -> list[list[int]]:
    """The chat-formatted ids of each of `PROMPTS`."""
    template = engine.tokenizer.apply_chat_template
    return [template([{"role": "user", "content": text}], tokenize=True) for text in PROMPTS]


def _tables(runner: ModelRunner, num_seqs: int, blocks_each: int = 8) -> list[list[int]]:
    return [list(range(i * blocks_each, (i + 1) * blocks_each)) for i in range(num_seqs)]


def _prefill(runner: ModelRunner, prompts: list[list[int]], tables: list[list[int]]) -> list[int]:
    """Each prompt prefilled alone; returns each one's greedy next token."""
    next_ids = []
    for prompt, table in zip(prompts, tables, strict=True):
        logits = runner.forward(ForwardBatch([prompt], [0], [table], is_prefill=True))
        next_ids.append(int(logits[0].argmax()))
    return next_ids


def _greedy_continuation(
    runner: ModelRunner, prompt: list[int], table: list[int], first: int, length: int
) -> list[int]:
    """`length` greedy tokens after `first`, one-token decode steps of this sequence alone."""
    tokens = [first]
    for step in range(length):
        logits = runner.forward(ForwardBatch([[tokens[-1]]], [len(prompt) + step], [table]))
        tokens.append(int(logits[0].argmax()))
    return tokens


def test_a_sequence_decodes_bitwise_alike_alone_and_in_a_batch(runner: ModelRunner, prompts: list[list[int]]) -> None:
    tables = _tables(runner, len(PROMPTS))
    firsts = _prefill(runner, prompts, tables)
    alone = [
        runner.forward(ForwardBatch([[first]], [len(prompt)], [table]))[0]
        for prompt, table, first in zip(prompts, tables, firsts, strict=True)
    ]
    together = runner.forward(ForwardBatch([[first] for first in firsts], [len(p) for p in prompts], tables))
    for i, row in enumerate(alone):
        assert torch.equal(together[i], row), f"sequence {i} rounds differently in a batch of {len(PROMPTS)}"


def test_a_verify_pass_scores_each_position_as_the_one_token_step(
    runner: ModelRunner, prompts: list[list[int]]
) -> None:
    prompt, other_prompt = prompts[2], prompts[0]
    (table,) = _tables(runner, 1)
    (first,) = _prefill(runner, [prompt], [table])
    tokens = _greedy_continuation(runner, prompt, table, first, 7)
    steps = [runner.forward(ForwardBatch([[token]], [len(prompt) + i], [table]))[0] for i, token in enumerate(tokens)]
    # The same 8 tokens as one pass (a draft of 7 after the last sampled token), alone and beside another sequence.
    verify = runner.forward(ForwardBatch([tokens], [len(prompt)], [table], all_logits=True))
    for i, row in enumerate(steps):
        assert torch.equal(verify[i], row), f"position {i} of the verify pass rounds differently"
    other_table = list(range(100, 108))
    (other_first,) = _prefill(runner, [other_prompt], [other_table])
    mixed = runner.forward(
        ForwardBatch([tokens, [other_first]], [len(prompt), len(other_prompt)], [table, other_table], all_logits=True)
    )
    assert all(torch.equal(mixed[i], row) for i, row in enumerate(steps))
