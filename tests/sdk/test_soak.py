"""The soak at reduced scale: 120 mixed requests (constrained, free, cancelled, failing) through one
`sdk.LLM` over the toy paged model and the real SmolLM2 tokenizer. `benchmarks/soak.py` runs the
same mix at full scale on the embedded SmolLM2 and documents what each kind must end in."""

from __future__ import annotations

import pytest

from benchmarks.soak import MAX_MASK_SECONDS, MAX_RSS_GROWTH, Outcome, run_soak
from sdk import LLM
from sdk.backends import LocalBackend
from tests.sdk.conftest import assert_pool_whole, fake_engine

pytestmark = pytest.mark.slow  # the real model or an external corpus

NUM_REQUESTS = 120
NUM_WARMUP = 40


async def test_mixed_requests_end_as_their_kind_requires_and_leave_nothing_behind() -> None:
    engine = fake_engine(max_mask_seconds=MAX_MASK_SECONDS)
    async with LLM(backend=LocalBackend(engine)) as llm:
        report = await run_soak(llm, NUM_REQUESTS, num_warmup=NUM_WARMUP)
    assert report.failures == []
    assert sum(report.outcomes.values()) == NUM_REQUESTS
    # Every ending occurred, so the mix exercised what it claims.
    assert set(report.outcomes) == {Outcome.VALUE, Outcome.INCOMPLETE, Outcome.CANCELLED, Outcome.TYPED_ERROR}
    assert report.kinds["slow_mask"] and report.kinds["matcher_raises"] and report.kinds["cancelled"]
    assert_pool_whole(engine)
    assert report.rss_growth < MAX_RSS_GROWTH, f"RSS grew by {report.rss_growth / 2**20:.1f} MiB"
