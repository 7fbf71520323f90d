"""Shared fixtures: an `LLM` over the runtime engine with a toy model (fast, real control plane)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from runtime.engine.llm_engine import Engine
from sdk import LLM
from sdk.backends import LocalBackend
from tests.runtime.fakes import FakeRunner, smollm2_tokenizer


def fake_engine(num_blocks: int = 512, **limits: int) -> Engine:
    """A real engine (scheduler, paged KV, sampling, constraints) over the toy paged model and the
    real SmolLM2 tokenizer; its "model" writes short garbage fast."""
    return Engine(FakeRunner(num_blocks=num_blocks, block_size=4), smollm2_tokenizer(), **limits)


def assert_pool_whole(engine: Engine) -> None:
    """Every KV block is free and no request is left in the engine."""
    assert not engine.has_unfinished_requests()
    assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks


def hold_steps_until_aborted(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """After the prefill (whose last step gives a call's first update), a decode step waits until the
    requests it steps are gone (aborted): without this, a call could finish before the test closes it,
    and end whole whether or not closing it aborts anything. Requests added meanwhile do not hold it."""
    real_forward = engine.runner.forward

    def forward_held_until_aborted(batch):
        if not batch.is_prefill:
            stepped = list(engine.scheduler.running)
            deadline = time.monotonic() + 60  # a liveness bound, not a timing check
            while any(request in engine.scheduler.running for request in stepped) and time.monotonic() < deadline:
                time.sleep(0.001)
        return real_forward(batch)

    monkeypatch.setattr(engine.runner, "forward", forward_held_until_aborted)


@pytest.fixture
def engine() -> Engine:
    return fake_engine()


@pytest.fixture
async def llm(engine: Engine) -> AsyncIterator[LLM]:
    client = LLM(backend=LocalBackend(engine))
    yield client
    await client.aclose()
