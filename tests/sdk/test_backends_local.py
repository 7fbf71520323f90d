"""LocalBackend: one stepping thread, updates to the callers' loops, aborts at once."""

from __future__ import annotations

import asyncio
import threading

import pytest

import sdk
from runtime.engine.llm_engine import Engine
from runtime.engine.sampling_params import SamplingParams
from sdk.backends import BackendRequest, LocalBackend
from tests.runtime.fakes import DigitsConstraint
from tests.sdk.conftest import assert_pool_whole, hold_steps_until_aborted

pytestmark = pytest.mark.slow  # the real model or an external corpus

MESSAGES = [{"role": "user", "content": "count"}]


def request(max_tokens: int = 6, constraint: object = None) -> BackendRequest:
    return BackendRequest(MESSAGES, SamplingParams(max_tokens=max_tokens, temperature=0.0), constraint)


async def collect(backend: LocalBackend, backend_request: BackendRequest) -> list:
    return [update async for update in backend.stream(backend_request)]


async def test_updates_stream_tokens_and_end_with_the_output(engine: Engine) -> None:
    backend = LocalBackend(engine)
    updates = await collect(backend, request(constraint=DigitsConstraint(max_digits=40)))
    assert updates[-1].is_finished and not any(update.is_finished for update in updates[:-1])
    assert "".join(update.text for update in updates) == updates[-1].output.text
    assert updates[-1].output.text.isdigit()
    backend.close()
    assert_pool_whole(engine)


async def test_closing_a_stream_midway_aborts_and_frees_at_once(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    hold_steps_until_aborted(engine, monkeypatch)
    backend = LocalBackend(engine)
    stream = backend.stream(request(max_tokens=300, constraint=DigitsConstraint(max_digits=400)))
    await stream.__anext__()
    assert engine.block_manager.num_free_blocks < engine.block_manager.num_blocks
    await stream.aclose()
    assert_pool_whole(engine)
    backend.close()


async def test_too_many_samples_is_an_error_about_samples(engine: Engine) -> None:
    backend = LocalBackend(engine)
    params = SamplingParams(max_tokens=4, temperature=1.0, n=engine.scheduler.max_num_seqs + 1)
    with pytest.raises(sdk.RequestError) as error:
        await collect(backend, BackendRequest(MESSAGES, params, None))
    assert error.value.field == "samples"
    backend.close()


async def test_an_engine_failure_reaches_every_caller_and_the_thread_goes_on(engine: Engine) -> None:
    backend = LocalBackend(engine)
    real_forward = engine.runner.forward
    calls = {"left": 1}

    def failing_forward(batch):
        if calls["left"]:
            calls["left"] -= 1
            raise RuntimeError("device lost")
        return real_forward(batch)

    engine.runner.forward = failing_forward
    results = await asyncio.gather(*(collect(backend, request()) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(result, RuntimeError) for result in results)
    assert_pool_whole(engine)
    updates = await collect(backend, request(constraint=DigitsConstraint()))
    assert updates[-1].is_finished
    backend.close()


async def test_close_ends_running_calls_with_closed_error(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    hold_steps_until_aborted(engine, monkeypatch)
    backend = LocalBackend(engine)
    stream = backend.stream(request(max_tokens=300, constraint=DigitsConstraint(max_digits=400)))
    await stream.__anext__()
    backend.close()
    with pytest.raises(sdk.ClosedError):
        async for _ in stream:
            pass
    with pytest.raises(sdk.ClosedError):
        await collect(backend, request())
    assert_pool_whole(engine)


def test_callers_on_different_event_loops_share_one_engine(engine: Engine) -> None:
    backend = LocalBackend(engine)
    outputs: list[str] = []

    def caller() -> None:
        updates = asyncio.run(collect(backend, request(constraint=DigitsConstraint(max_digits=5))))
        outputs.append(updates[-1].output.text)

    threads = [threading.Thread(target=caller) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(outputs) == 4 and all(text.isdigit() for text in outputs)
    backend.close()
    assert_pool_whole(engine)
