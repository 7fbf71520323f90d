"""The runaway guard: loops are detected, closed within the constraint, and nothing else changes."""

from __future__ import annotations

import json

import pytest
import torch

import grammars
from runtime.engine.llm_engine import Engine
from runtime.engine.runaway import MIN_LOOP_TOKENS, ends_in_loop
from runtime.engine.sampling_params import SamplingParams
from runtime.errors import RequestError
from runtime.model.runner import ForwardBatch
from sdk.options import prepare_call
from tests.runtime.fakes import FakeRunner, smollm2_tokenizer

GREEDY = SamplingParams(max_tokens=48)


def test_a_run_of_one_token_is_a_loop_from_min_loop_tokens_on() -> None:
    assert not ends_in_loop([7] * (MIN_LOOP_TOKENS - 1))
    assert ends_in_loop([7] * MIN_LOOP_TOKENS)
    assert not ends_in_loop([7] * MIN_LOOP_TOKENS + [8])


def test_a_block_must_repeat_enough_to_be_a_loop() -> None:
    pair = [5, 6]
    assert ends_in_loop(pair * 6) and not ends_in_loop(pair * 5 + [5])
    phrase = [1, 2, 3, 4, 5]
    assert ends_in_loop([9, 9] + phrase * 3) and not ends_in_loop(phrase * 2 + phrase[:4])
    assert not ends_in_loop(list(range(100)))


def test_the_prompt_does_not_count_towards_a_loop() -> None:
    token_ids = [3] * 20 + [3] * (MIN_LOOP_TOKENS - 1)
    assert ends_in_loop(token_ids, start=0)
    assert not ends_in_loop(token_ids, start=20)


class LoopingRunner(FakeRunner):
    """The fake model, with a large bonus on a few tokens: a model that loops when it can."""

    def __init__(self, favourites: dict[int, float]) -> None:
        super().__init__(num_blocks=256)
        self.favourites = favourites

    def forward(self, batch: ForwardBatch) -> torch.Tensor:
        logits = super().forward(batch)
        for token_id, bonus in self.favourites.items():
            logits[:, token_id] += bonus
        return logits


def token_id(data: bytes) -> int:
    return smollm2_tokenizer().token_bytes.index(data)


def generate(engine: Engine, constraint: object, **params: object) -> tuple[str, list[int], str]:
    output = engine.generate([[5, 6, 7]], GREEDY.replace(**params), constraints=constraint)[0].outputs[0]
    return output.text, list(output.token_ids), str(output.finish_reason)


def test_a_looping_array_is_closed_early_and_stays_valid() -> None:
    """`[0,0,0,...`: the guard closes the array once the loop is long enough; without it the loop
    runs until the length-aware mask closes it at the end of the budget."""
    engine = Engine(LoopingRunner({token_id(b"0"): 60.0, token_id(b","): 50.0}), smollm2_tokenizer())
    constraint = grammars.compile(list[int])
    guarded, guarded_ids, guarded_reason = generate(engine, constraint)
    unguarded, unguarded_ids, _ = generate(engine, constraint, runaway_guard=False)
    assert guarded_reason == "stop" and constraint.accepts(guarded)
    assert constraint.accepts(unguarded)
    assert len(guarded_ids) < MIN_LOOP_TOKENS + 8 < len(unguarded_ids) - 20
    assert isinstance(json.loads(guarded), list)
    # Up to the loop the two are the same tokens.
    assert guarded_ids[:MIN_LOOP_TOKENS] == unguarded_ids[:MIN_LOOP_TOKENS]


def test_completions_that_never_loop_are_unchanged() -> None:
    engine = Engine(FakeRunner(num_blocks=256), smollm2_tokenizer())
    constraint = grammars.compile(grammars.Regex(r"[a-z ]{1,60}\.[0-9]{0,9}"))
    prompts = [[seed, seed + 1, seed + 2] for seed in range(10, 30, 5)]
    on = engine.generate(prompts, GREEDY, constraints=constraint)
    off = engine.generate(prompts, GREEDY.replace(runaway_guard=False), constraints=constraint)
    for guarded, unguarded in zip(on, off):
        ids = list(guarded.outputs[0].token_ids)
        assert not any(ends_in_loop(ids[:end]) for end in range(len(ids) + 1))  # the test means something
        assert ids == list(unguarded.outputs[0].token_ids)


def test_free_text_is_never_guarded() -> None:
    engine = Engine(LoopingRunner({token_id(b"0"): 60.0}), smollm2_tokenizer())
    text, ids, reason = generate(engine, None, max_tokens=30, ignore_eos=True)
    assert text == "0" * 30 and reason == "length"


def test_the_switch_is_checked_and_passed_through_the_sdk() -> None:
    with pytest.raises(RequestError) as caught:
        SamplingParams(runaway_guard="yes")  # type: ignore[arg-type]
    assert caught.value.field == "runaway_guard"
    assert prepare_call("x", int, {}).params.runaway_guard is True
    assert prepare_call("x", int, {"runaway_guard": False}).params.runaway_guard is False


@pytest.mark.slow
@pytest.mark.parametrize("output", [int, float, list[int]])
async def test_the_spider_question_gets_a_number_long_before_the_budget(output: object) -> None:
    """Greedy SmolLM2 answers `1000000...` (`1.1111...`, `[1, 20, 100, 100, ...`); the guard ends it."""
    import sdk

    llm = sdk.LLM()
    try:
        guarded = await llm.run("How many legs does a spider have?", output=output, max_tokens=60)
        unguarded = await llm.run(
            "How many legs does a spider have?", output=output, max_tokens=60, runaway_guard=False
        )
        plain = await llm.run("What is 2 + 3?", output=output, max_tokens=60)
        plain_off = await llm.run("What is 2 + 3?", output=output, max_tokens=60, runaway_guard=False)
    finally:
        await llm.aclose()
    assert isinstance(guarded.value, list if output == list[int] else output)
    assert guarded.usage.completion_tokens < 30 < unguarded.usage.completion_tokens
    assert plain.text == plain_off.text  # a call that does not loop is untouched
