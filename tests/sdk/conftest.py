"""Shared fixtures: an `LLM` over the runtime engine with a toy model (fast, real control plane)."""

from __future__ import annotations

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


@pytest.fixture
def engine() -> Engine:
    return fake_engine()


@pytest.fixture
async def llm(engine: Engine) -> AsyncIterator[LLM]:
    client = LLM(backend=LocalBackend(engine))
    yield client
    await client.aclose()
