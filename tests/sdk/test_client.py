"""LLM: typed values over the engine (toy model) and over scripted completions (exact texts)."""

from __future__ import annotations

import asyncio
import re
from typing import Any, Literal

import pytest
from pydantic import BaseModel, field_validator

import grammars
import sdk
from runtime.engine.llm_engine import Engine
from runtime.engine.sequence import FinishReason
from sdk import LLM
from sdk.backends import Scripted, ScriptedBackend
from tests.runtime.fakes import FakeRunner
from tests.sdk.conftest import assert_pool_whole


class City(BaseModel):
    name: str
    population: int

    @field_validator("population")
    @classmethod
    def positive(cls, value: int) -> int:
        if value <= 0:
            raise ValueError("population must be positive")
        return value


# Over the engine: the constraint holds whatever the (toy) model prefers.


def fake_runner(engine: Engine) -> FakeRunner:
    """The engine's toy runner, with its counters."""
    runner = engine.runner
    assert isinstance(runner, FakeRunner)
    return runner


async def test_grammar_outputs_are_in_their_language(llm: LLM) -> None:
    digits = await llm.generate("a number", output=grammars.Regex(r"[0-9]{2,4}"), max_tokens=8)
    assert re.fullmatch(r"[0-9]{2,4}", digits)
    choice = await llm.generate("pick", output=grammars.Choice(["red", "green", "blue"]), max_tokens=8)
    assert choice in {"red", "green", "blue"}


async def test_a_json_schema_output_returns_the_parsed_value(llm: LLM) -> None:
    value = await llm.generate("answer", output={"enum": ["yes", "no"]}, max_tokens=8)
    assert value in {"yes", "no"}


async def test_run_reports_usage_timings_and_mask_time(llm: LLM) -> None:
    result = await llm.run("a number", output=grammars.Regex(r"[0-9]{3}"), max_tokens=8)
    assert result.finish_reason is FinishReason.STOP and result.votes is None and result.reasoning is None
    assert result.usage.completion_tokens >= 2 and result.usage.prompt_tokens > 5
    timings = result.timings
    assert 0.0 < timings.mask_time < timings.total
    assert timings.time_to_first_token is not None and 0.0 < timings.time_to_first_token <= timings.total


async def test_free_text_cut_by_max_tokens_is_returned_with_finish_reason_length(llm: LLM) -> None:
    result = await llm.run("go on", max_tokens=3)
    assert result.finish_reason == "length" and result.usage.completion_tokens == 3
    assert result.value == result.text and result.text
    assert await llm.generate("go on", output=str, max_tokens=3) == result.text


async def test_a_constrained_output_cut_by_max_tokens_raises_incomplete_output(llm: LLM) -> None:
    with pytest.raises(sdk.IncompleteOutputError) as info:
        await llm.generate("digits", output=grammars.Regex(r"[0-9]{40}"), max_tokens=3)
    assert info.value.usage.completion_tokens == 3
    assert re.fullmatch(r"[0-9]+", info.value.text)
    assert not isinstance(info.value, sdk.ValidationError)


async def test_samples_vote_within_one_request(llm: LLM, engine: Engine) -> None:
    result = await llm.run("pick", output=grammars.Choice(["a", "b", "c"]), samples=6, seed=3, max_tokens=4)
    votes = result.votes
    assert votes is not None and votes.num_samples == 6
    assert sum(vote.count for vote in votes.candidates) + votes.num_invalid == 6
    assert result.value == votes.winner.value and votes.winner.key == f'"{result.value}"'
    assert [v.count for v in votes.candidates] == sorted((v.count for v in votes.candidates), reverse=True)
    assert_pool_whole(engine)


async def test_beam_search_under_a_constraint(llm: LLM) -> None:
    value = await llm.generate("n", output=grammars.Regex(r"[0-9]{2}"), num_beams=3, length_penalty=0.5, max_tokens=4)
    assert re.fullmatch(r"[0-9]{2}", value)


async def test_same_seed_same_value(llm: LLM) -> None:
    kwargs: dict[str, Any] = dict(output=grammars.Regex(r"[a-z]{3,6}"), temperature=1.5, seed=11, max_tokens=8)
    first, second = await asyncio.gather(llm.generate("w", **kwargs), llm.generate("w", **kwargs))
    assert first == second == await llm.generate("w", **kwargs)


async def test_concurrent_calls_share_the_engine_and_leave_it_clean(llm: LLM, engine: Engine) -> None:
    values = await asyncio.gather(
        *(llm.generate(f"q{i}", output=grammars.Regex(r"[a-z]{2}"), max_tokens=4) for i in range(16))
    )
    assert all(re.fullmatch(r"[a-z]{2}", value) for value in values)
    assert fake_runner(engine).max_batch_size > 1  # the scheduler batched them
    assert_pool_whole(engine)


async def test_cancelling_a_call_frees_its_blocks_at_once(llm: LLM, engine: Engine) -> None:
    task = asyncio.create_task(llm.generate("go on", max_tokens=400))
    while engine.block_manager.num_free_blocks == engine.block_manager.num_blocks:
        await asyncio.sleep(0.001)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_pool_whole(engine)


async def test_bad_input_fails_before_anything_is_generated(llm: LLM, engine: Engine) -> None:
    runner = fake_runner(engine)
    with pytest.raises(sdk.UnsupportedOutputTypeError):
        await llm.generate("x", output=print)
    with pytest.raises(sdk.UnsupportedSchemaError):
        await llm.generate("x", output={"type": "array", "uniqueItems": True, "items": {"type": "object"}})
    with pytest.raises(grammars.SchemaError):
        await llm.generate("x", output={"type": "nonsense"})
    with pytest.raises(sdk.RequestError) as conflict:
        await llm.generate("x", output=grammars.Choice(["a"]), samples=3, num_beams=2)
    assert conflict.value.field == "num_beams"
    with pytest.raises(sdk.PromptTooLongError):
        await llm.generate("word " * 600, output=grammars.Choice(["a"]))
    assert runner.num_forward_calls == 0
    assert_pool_whole(engine)


async def test_a_huge_prompt_is_refused_before_it_is_tokenized(llm: LLM, engine: Engine) -> None:
    with pytest.raises(sdk.PromptTooLongError) as too_long:
        await llm.generate("x" * 10_000_000)
    assert too_long.value.field == "prompt" and too_long.value.max_context_tokens == engine.max_model_len
    assert too_long.value.num_prompt_tokens >= engine.max_model_len
    assert fake_runner(engine).num_forward_calls == 0


async def test_a_closed_llm_refuses_calls(engine: Engine) -> None:
    from sdk.backends import LocalBackend

    llm = LLM(backend=LocalBackend(engine))
    await llm.aclose()
    with pytest.raises(sdk.ClosedError):
        await llm.generate("x", max_tokens=2)


# Over scripted completions: exact texts, so parsing, reasoning, retries and voting are pinned.


async def test_a_pydantic_output_is_parsed_and_validated() -> None:
    llm = LLM(backend=ScriptedBackend(['{"name": "Oslo", "population": 709000}']))
    assert await llm.generate("Oslo?", output=City) == City(name="Oslo", population=709000)


async def test_unknown_keywords_fail_naming_them_before_anything_is_generated() -> None:
    backend = ScriptedBackend(["unused"])
    llm = LLM(backend=backend)
    with pytest.raises(sdk.RequestError) as info:
        await llm.generate("?", max_token=8)  # type: ignore[call-arg]
    assert info.value.field == "max_token" and "max_tokens" in str(info.value)
    with pytest.raises(sdk.RequestError) as streamed:
        llm.stream("?", samples=3)  # type: ignore[call-arg]
    assert streamed.value.field == "samples" and backend.requests == []


async def test_validation_error_carries_loc_text_and_usage() -> None:
    llm = LLM(backend=ScriptedBackend(['{"name": "Atlantis", "population": -1}']))
    with pytest.raises(sdk.ValidationError) as info:
        await llm.generate("Atlantis?", output=City)
    error = info.value
    assert [d["loc"] for d in error.errors()] == [("population",)]
    assert error.text == '{"name": "Atlantis", "population": -1}' and error.usage.completion_tokens > 0


async def test_retries_feed_the_error_back_and_sum_usage() -> None:
    backend = ScriptedBackend(['{"name": "Atlantis", "population": -1}', '{"name": "Atlantis", "population": 5}'])
    result = await LLM(backend=backend).run("Atlantis?", output=City, retries=1)
    assert result.value.population == 5 and result.num_attempts == 2
    feedback = backend.requests[1].messages
    assert feedback[-2] == {"role": "assistant", "content": '{"name": "Atlantis", "population": -1}'}
    assert "population" in feedback[-1]["content"] and "positive" in feedback[-1]["content"]
    assert result.usage.completion_tokens == 10 + 10  # 38 and 37 characters, 4 per scripted token


async def test_incomplete_output_is_not_retried() -> None:
    backend = ScriptedBackend([Scripted('{"name": "Oslo", "popu', FinishReason.LENGTH), "unused"])
    with pytest.raises(sdk.IncompleteOutputError) as info:
        await LLM(backend=backend).generate("Oslo?", output=City, retries=3)
    assert info.value.text == '{"name": "Oslo", "popu' and len(backend.requests) == 1


async def test_reasoning_is_split_from_the_answer() -> None:
    answer = '{"name": "Oslo", "population": 709000}'
    backend = ScriptedBackend([f"Oslo is big.\nIt has 709000 people.\nAnswer: {answer}"])
    result = await LLM(backend=backend).run("Oslo?", output=City, reasoning=True)
    assert result.value.population == 709000
    assert result.reasoning == "Oslo is big.\nIt has 709000 people."
    assert "Answer:" in backend.requests[0].messages[0]["content"]
    assert backend.requests[0].constraint is not None


async def test_votes_on_the_canonical_form_and_on_a_field() -> None:
    samples = [
        '{"name": "Oslo", "population": 1}',
        '{"population": 1, "name":"Oslo"}',
        '{"name": "Bergen", "population": 2}',
        '{"name": "Oslo", "population": 3}',
        '{"name": "Oslo", "population": -3}',
    ]
    backend = ScriptedBackend([samples, samples])
    llm = LLM(backend=backend)
    result = await llm.run("?", output=City, samples=5)
    assert result.value == City(name="Oslo", population=1)
    assert result.votes is not None and result.votes.counts == {
        '{"name":"Oslo","population":1}': 2,
        '{"name":"Bergen","population":2}': 1,
        '{"name":"Oslo","population":3}': 1,
    }
    assert result.votes.num_invalid == 1
    by_name = await llm.run("?", output=City, samples=5, vote_on="name")
    assert by_name.votes is not None and by_name.votes.winner.count == 3 and by_name.value.name == "Oslo"
    assert backend.requests[0].params.n == 5 and backend.requests[0].params.temperature == 0.7


async def test_a_literal_classification_is_parsed() -> None:
    llm = LLM(backend=ScriptedBackend(["negative"]))
    assert await llm.generate("review", output=Literal["positive", "negative"]) == "negative"


async def test_finish_reason_is_the_engines_own() -> None:
    backend = ScriptedBackend(["It is sunny.", Scripted("It is sunny and", FinishReason.LENGTH)])
    llm = LLM(backend=backend)
    assert (await llm.run("Weather?")).finish_reason == "stop"
    cut = await llm.run("Weather?")
    assert cut.finish_reason is FinishReason.LENGTH and cut.value == "It is sunny and"


async def test_a_reasoning_cut_before_its_answer_is_incomplete_and_one_cut_in_its_answer_is_returned() -> None:
    backend = ScriptedBackend(
        [Scripted("Let me think about", FinishReason.LENGTH), Scripted("Easy.\nAnswer: Paris is", FinishReason.LENGTH)]
    )
    llm = LLM(backend=backend)
    with pytest.raises(sdk.IncompleteOutputError) as info:
        await llm.generate("Capital of France?", reasoning=True)
    assert info.value.reasoning == "Let me think about"
    result = await llm.run("Capital of France?", reasoning=True)
    assert (result.value, result.reasoning, result.finish_reason) == ("Paris is", "Easy.", "length")


async def test_with_samples_finish_reason_is_the_first_winning_samples() -> None:
    samples: list[str | Scripted] = ["no", Scripted("yes", FinishReason.LENGTH), "yes", "maybe"]
    llm = LLM(backend=ScriptedBackend([samples, list(reversed(samples))]))
    first = await llm.run("?", samples=4)
    assert first.votes is not None and first.votes.winner.count == 2
    assert (first.value, first.finish_reason) == ("yes", "length")
    second = await llm.run("?", samples=4)
    assert (second.value, second.finish_reason) == ("yes", "stop")
