"""Choices ranked by likelihood: closed-set outputs scored whole (sdk.choices) instead of generated."""

from __future__ import annotations

import enum
import math
from collections import Counter
from typing import Literal

import pytest

import grammars
from runtime.engine.llm_engine import Engine
from runtime.errors import CacheBusyError
from sdk import LLM
from sdk.backends import ScriptedBackend
from sdk.choices import pick
from tests.runtime.fakes import reference_logits
from tests.sdk.conftest import assert_pool_whole

Sentiment = Literal["positive", "negative", "neutral"]
SCORES = {"positive": -3.0, "negative": -1.0, "neutral": -2.5, "true": -0.2, "false": -1.8}


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


def scripted(**scores: float) -> ScriptedBackend:
    return ScriptedBackend([], scores={**SCORES, **scores})


@pytest.mark.parametrize(
    ("output", "expected", "texts"),
    [
        (Sentiment, "negative", ("positive", "negative", "neutral")),
        (grammars.Choice(["neutral", "positive"]), "neutral", ("neutral", "positive")),
        (bool, True, ("true", "false")),
    ],
)
async def test_greedy_picks_the_most_likely_option(output: object, expected: object, texts: tuple[str, ...]) -> None:
    backend = scripted()
    result = await LLM(backend=backend).run("classify", output=output)
    assert result.value == expected
    assert result.choice_logprobs == {text: SCORES[text] for text in texts}
    assert result.text == str(expected).lower() and result.finish_reason == "stop"
    assert backend.scored == [texts] and backend.requests == []  # scored, nothing generated


async def test_an_enum_value_comes_back_as_the_enum() -> None:
    result = await LLM(backend=scripted(red=-4.0, green=-0.5)).run("color?", output=Color)
    assert result.value is Color.GREEN and result.choice_logprobs == {"red": -4.0, "green": -0.5}


async def test_temperature_draws_follow_the_softmax_with_a_seed() -> None:
    llm = LLM(backend=scripted())
    values = [await llm.generate("classify", output=Sentiment, temperature=1.0, seed=seed) for seed in range(400)]
    counts = Counter(values)
    weights = {label: math.exp(SCORES[label]) for label in ("positive", "negative", "neutral")}
    total = sum(weights.values())
    for label, weight in weights.items():
        assert counts[label] / 400 == pytest.approx(weight / total, abs=0.07)
    again = [await llm.generate("classify", output=Sentiment, temperature=1.0, seed=seed) for seed in range(20)]
    assert again == values[:20]


def test_pick_is_greedy_at_temperature_zero_and_sharpens_as_it_falls() -> None:
    assert pick([-2.0, -0.1, -0.1, -5.0], 0.0, None) == 1
    assert {pick([-2.0, -0.1], 0.01, seed) for seed in range(50)} == {1}
    assert pick([-math.inf, -math.inf], 1.0, 3) == 0


@pytest.mark.parametrize(
    "options",
    [
        {"reasoning": True},
        {"samples": 2},
        {"num_beams": 2},
        {"top_k": 5},
        {"repetition_penalty": 1.2},
    ],
)
async def test_other_calls_generate_token_by_token(options: dict[str, object]) -> None:
    text = "Thinking.\nAnswer: neutral" if options.get("reasoning") else "neutral"
    backend = ScriptedBackend(lambda request: [text] * request.params.n, scores=SCORES)
    result = await LLM(backend=backend).run("classify", output=Sentiment, max_tokens=64, **options)  # type: ignore[arg-type]
    assert result.value == "neutral" and result.choice_logprobs is None
    assert backend.scored == [] and len(backend.requests) == 1


async def test_a_pool_too_busy_to_score_falls_back_to_generating() -> None:
    class Busy(ScriptedBackend):
        async def score(self, messages, texts):  # type: ignore[no-untyped-def]
            raise CacheBusyError("not enough free KV blocks to score the options now")

    backend = Busy(["neutral"])
    assert await LLM(backend=backend).generate("classify", output=Sentiment) == "neutral"
    assert len(backend.requests) == 1


async def test_a_backend_that_cannot_score_generates() -> None:
    backend = ScriptedBackend(["neutral"])
    result = await LLM(backend=backend).run("classify", output=Sentiment)
    assert result.value == "neutral" and result.choice_logprobs is None


async def test_the_local_engine_ranks_by_the_models_sequence_logprobs(llm: LLM, engine: Engine) -> None:
    result = await llm.run("pick one", output=grammars.Choice(["red", "green", "blue"]), describe_output=False)
    assert result.choice_logprobs is not None
    assert max(result.choice_logprobs, key=result.choice_logprobs.__getitem__) == result.value
    # The toy model's logits are a function of the context: recompute one option's score from them.
    tokenizer = engine.tokenizer
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "pick one"}], tokenize=True)
    assert isinstance(prompt, list)
    tokens = [*tokenizer.encode("green"), tokenizer.eos_token_ids[0]]
    expected = 0.0
    for index, token_id in enumerate(tokens):
        expected += float(reference_logits([*prompt, *tokens[:index]]).log_softmax(-1)[token_id])
    assert result.choice_logprobs["green"] == pytest.approx(expected, abs=1e-4)
    assert result.usage.prompt_tokens == len(prompt)
    assert_pool_whole(engine)
