"""API key, body limit, admission (429) and client disconnects, on a toy engine whose forward passes
the test lets through one by one (so "in flight" and "mid-stream" are states, not timings)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

import httpx
import openai
import pytest

from tests.sdk.conftest import assert_pool_whole
from tests.sdk.server.conftest import API_KEY, GATED_MAX_BODY_BYTES, GatedRunner, RunningServer

#: How long to wait for the server to reach a state before failing (generous: a loaded CI machine).
STATE_TIMEOUT_SECONDS = 60.0


@pytest.fixture
def runner(gated_server: RunningServer) -> Iterator[GatedRunner]:
    gated = cast(GatedRunner, gated_server.engine.runner)
    yield gated
    gated.allow(None)


@pytest.fixture
async def http(gated_server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    base_url = gated_server.base_url.removesuffix("/v1")
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=STATE_TIMEOUT_SECONDS) as opened:
        yield opened


def body(server: RunningServer, **fields: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": "Letters."}]
    return {"model": server.model, "messages": messages, "max_tokens": 200, "guided_regex": "[a-z]{150}", **fields}


async def until(predicate: Any) -> None:
    """Wait for the server to reach a state (checked every few milliseconds)."""
    async with asyncio.timeout(STATE_TIMEOUT_SECONDS):
        while not predicate():
            await asyncio.sleep(0.005)


async def test_the_api_key_guards_the_api(gated_server: RunningServer, http: httpx.AsyncClient) -> None:
    async with openai.AsyncOpenAI(base_url=gated_server.base_url, api_key="wrong", max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError) as caught:
            await client.models.list()
    assert caught.value.code == "invalid_api_key"
    async with httpx.AsyncClient(base_url=gated_server.base_url.removesuffix("/v1")) as anonymous:
        assert (await anonymous.post("/v1/chat/completions", json=body(gated_server))).status_code == 401
        assert (await anonymous.get("/health")).status_code == 200
    async with openai.AsyncOpenAI(base_url=gated_server.base_url, api_key=API_KEY, max_retries=0) as client:
        assert [model.id for model in (await client.models.list()).data] == [gated_server.model]


async def test_a_body_over_the_limit_is_a_413(gated_server: RunningServer, http: httpx.AsyncClient) -> None:
    large = body(gated_server, messages=[{"role": "user", "content": "x" * GATED_MAX_BODY_BYTES}])
    response = await http.post("/v1/chat/completions", json=large)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
        for _ in range(GATED_MAX_BODY_BYTES // 1024 + 1):
            yield b" " * 1024

    response = await http.post("/v1/chat/completions", content=chunked())
    assert response.status_code == 413


async def test_past_the_limit_requests_get_429_then_a_disconnect_frees_everything(
    gated_server: RunningServer, http: httpx.AsyncClient, runner: GatedRunner
) -> None:
    engine = gated_server.engine
    runner.allow(0)  # the first request waits in its prefill
    waiting = asyncio.create_task(http.post("/v1/chat/completions", json=body(gated_server)))
    await until(lambda: engine.block_manager.num_used_blocks > 0)  # scheduled, its prefill waiting
    async with openai.AsyncOpenAI(base_url=gated_server.base_url, api_key=API_KEY, max_retries=0) as client:
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(
                model=gated_server.model, messages=[{"role": "user", "content": "hi"}], max_tokens=5
            )
    assert caught.value.response.headers["Retry-After"] == "1"
    waiting.cancel()  # the client goes away while the engine is stuck mid-step
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
    await until(lambda: not engine.has_unfinished_requests())
    assert_pool_whole(engine)


async def test_a_disconnect_mid_stream_aborts_the_request(
    gated_server: RunningServer, http: httpx.AsyncClient, runner: GatedRunner
) -> None:
    engine = gated_server.engine
    runner.allow(4)  # prefill and three tokens, then the engine waits
    async with http.stream("POST", "/v1/chat/completions", json=body(gated_server, stream=True)) as response:
        assert response.status_code == 200
        lines = response.aiter_lines()
        content = ""
        while '"content"' not in content:
            content = await anext(lines)
        assert engine.has_unfinished_requests()
    await until(lambda: not engine.has_unfinished_requests())
    assert_pool_whole(engine)
    runner.allow(None)
    response = await http.post("/v1/chat/completions", json=body(gated_server, guided_regex=None, max_tokens=4))
    assert response.status_code == 200  # the server is whole: the next request runs
