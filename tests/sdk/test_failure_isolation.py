"""A constraint that fails (an exception, a mask past its budget) fails its own call, never its neighbours'."""

from __future__ import annotations

import asyncio

import grammars
import sdk
from runtime.engine.sampling_params import SamplingParams
from sdk.backends import BackendRequest, LocalBackend
from tests.runtime.test_failure_isolation import SLOW_REGEX, _FailingConstraint
from tests.sdk.conftest import assert_pool_whole, fake_engine

MESSAGES = [{"role": "user", "content": "go"}]


async def test_a_matcher_exception_reaches_only_its_own_stream() -> None:
    engine = fake_engine()
    backend = LocalBackend(engine)
    params = SamplingParams(max_tokens=6, temperature=0.0)

    async def last_update(constraint: object) -> object:
        return [update async for update in backend.stream(BackendRequest(MESSAGES, params, constraint))][-1]

    bad, good = await asyncio.gather(
        last_update(_FailingConstraint("mask", RecursionError("too deep"))), last_update(None)
    )
    assert bad.output.finish_reason == "error" and isinstance(bad.output.error, grammars.MatcherFailedError)
    assert good.output.finish_reason == "length"
    backend.close()
    assert_pool_whole(engine)


async def test_a_mask_past_its_budget_fails_its_call_with_a_typed_error() -> None:
    engine = fake_engine(max_mask_seconds=0.3)

    async with sdk.LLM(backend=LocalBackend(engine)) as llm:
        slow = llm.generate("letters", output=grammars.Regex(SLOW_REGEX), max_tokens=4)
        fine = llm.generate("digits", output=grammars.Regex(r"[0-9]{2}"), max_tokens=4)
        results = await asyncio.gather(slow, fine, return_exceptions=True)
    assert isinstance(results[0], sdk.ConstraintFailedError)
    assert isinstance(results[0].__cause__, grammars.ConstraintLimitError)
    assert isinstance(results[1], str) and len(results[1]) == 2
    assert_pool_whole(engine)
