"""Choices ranked by likelihood on the real embedded model: the quickstart's three reviews."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path
from typing import get_args

import pytest

from sdk import LLM

pytestmark = pytest.mark.slow  # the real model

_QUICKSTART = Path(__file__).parents[2] / "examples" / "quickstart.py"


def _quickstart() -> object:
    spec = importlib.util.spec_from_file_location("quickstart", _QUICKSTART)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
async def llm() -> AsyncIterator[LLM]:
    client = LLM()
    yield client
    await client.aclose()


async def test_quickstart_reviews_are_labelled_from_their_scores(llm: LLM) -> None:
    import sdk

    quickstart = _quickstart()
    sentiment, reviews = quickstart.Sentiment, quickstart.REVIEWS  # type: ignore[attr-defined]
    examples = [
        sdk.Example(input="I love this phone, it is fantastic.", output="positive"),
        sdk.Example(input="Worst service ever, I want a refund.", output="negative"),
        sdk.Example(input="The package contains two cables.", output="neutral"),
    ]
    results = await asyncio.gather(
        *(
            llm.run(
                sdk.Prompt(instructions="Classify the sentiment of the review.", inputs=review, examples=examples),
                output=sentiment,
            )
            for review in reviews
        )
    )
    labels = set(get_args(sentiment))
    for result in results:
        assert result.value in labels
        assert result.choice_logprobs is not None and set(result.choice_logprobs) == labels
        assert all(logprob < 0.0 for logprob in result.choice_logprobs.values())
        assert result.value == max(result.choice_logprobs, key=result.choice_logprobs.__getitem__)
    print([result.value for result in results], [result.choice_logprobs for result in results])
