"""The load test of `benchmarks/serve.py` at small scale, on the embedded model: 16 concurrent
streaming clients share 24 mixed requests (constrained, free, tools, some disconnecting midway).
No 5xx, every completed answer valid against its constraint or tool schema, every stream well
formed, and the KV block pool whole afterwards, as `/metrics` reports it and as the engine holds it.
The benchmark documents the mix and what each kind must end in."""

from __future__ import annotations

import pytest

from benchmarks.serve import KINDS, run_load
from tests.sdk.conftest import assert_pool_whole
from tests.sdk.server.conftest import RunningServer

pytestmark = pytest.mark.slow

NUM_CLIENTS = 16
NUM_REQUESTS = 24


async def test_mixed_streaming_load_leaves_the_server_whole(smollm2_server: RunningServer) -> None:
    report = await run_load(
        smollm2_server.base_url, smollm2_server.model, num_clients=NUM_CLIENTS, num_requests=NUM_REQUESTS
    )
    assert report.failures == []
    assert len(report.answers) == NUM_REQUESTS
    assert {answer.job.kind for answer in report.answers} == set(KINDS)
    assert report.server_statuses == {"200": NUM_REQUESTS}
    assert report.num_disconnected >= 1  # some clients really left mid-stream
    assert len(report.completed) + report.num_disconnected == NUM_REQUESTS
    assert report.pool_whole
    assert_pool_whole(smollm2_server.engine)
