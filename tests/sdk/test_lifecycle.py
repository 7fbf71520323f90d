"""Client lifecycle: a dropped `LLM` or `SyncLLM` frees its engine and threads, and warns once if unclosed."""

from __future__ import annotations

import contextlib
import gc
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import grammars
from runtime.engine.llm_engine import Engine
from sdk import LLM, SyncLLM
from sdk.backends import LocalBackend
from tests.runtime.tiny_gguf import TinySpec, tiny_hf_weights, write_tiny_gguf
from tests.sdk.conftest import fake_engine

pytestmark = pytest.mark.slow  # each test loads an engine and waits for its threads to end

PROMPT = "count"
#: A short constrained call: it ends where the grammar accepts, well within max_tokens.
CALL = {"output": grammars.Regex(r"[0-9]{2}"), "max_tokens": 4}


def engine_and_ref() -> tuple[Engine, weakref.ref[Engine]]:
    engine = fake_engine()
    return engine, weakref.ref(engine)


def threads_since(before: set[threading.Thread]) -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread not in before]


@contextlib.contextmanager
def recorded_resource_warnings() -> Iterator[Callable[[], list[str]]]:
    """Record the ResourceWarnings raised inside the block (read them through the yielded function).

    Earlier tests' garbage is collected first: an unclosed client another test dropped warns then,
    not inside the block, where it would be counted as this test's.
    """
    gc.collect()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        yield lambda: [str(item.message) for item in record if issubclass(item.category, ResourceWarning)]


def assert_released(new_threads: list[threading.Thread], engine_ref: weakref.ref[Engine]) -> None:
    """The client's threads exit (the finalizer stops them without waiting) and the engine is collected."""
    for thread in new_threads:
        thread.join(timeout=60)  # a liveness bound, not a timing check: they exit at once when stopped
    assert [thread.name for thread in new_threads if thread.is_alive()] == []
    gc.collect()  # the engine holds reference cycles (bound methods of its own)
    assert engine_ref() is None


async def test_a_dropped_llm_frees_its_engine_and_threads_and_warns_once() -> None:
    before = set(threading.enumerate())
    engine, engine_ref = engine_and_ref()
    llm = LLM(backend=LocalBackend(engine))
    del engine
    await llm.generate(PROMPT, **CALL)
    new_threads = threads_since(before)
    assert {thread.name.split("_")[0] for thread in new_threads} == {"stencil-engine", "stencil-submit"}
    with recorded_resource_warnings() as resource_warnings:
        del llm
        gc.collect()
    assert len(resource_warnings()) == 1 and "sdk.LLM" in resource_warnings()[0]
    assert_released(new_threads, engine_ref)


async def test_a_dropped_llm_that_never_ran_is_freed_too() -> None:
    engine, engine_ref = engine_and_ref()
    llm = LLM(backend=LocalBackend(engine))
    del engine
    with pytest.warns(ResourceWarning, match="unclosed sdk.LLM"):
        del llm
        gc.collect()
    assert_released([], engine_ref)


async def test_a_closed_llm_does_not_warn() -> None:
    before = set(threading.enumerate())
    engine, engine_ref = engine_and_ref()
    llm = LLM(backend=LocalBackend(engine))
    del engine
    await llm.generate(PROMPT, **CALL)
    await llm.aclose()
    with recorded_resource_warnings() as resource_warnings:
        del llm
        gc.collect()
    assert resource_warnings() == []
    assert_released(threads_since(before), engine_ref)


@pytest.mark.parametrize(
    "use", [lambda llm: llm.generate(PROMPT, **CALL), lambda llm: list(llm.stream(PROMPT, **CALL))]
)
def test_a_dropped_sync_llm_frees_its_loop_engine_and_threads_and_warns_once(use: Callable[[SyncLLM], object]) -> None:
    before = set(threading.enumerate())
    engine, engine_ref = engine_and_ref()
    llm = SyncLLM(backend=LocalBackend(engine))
    del engine
    use(llm)
    new_threads = threads_since(before)
    assert {thread.name.split("_")[0] for thread in new_threads} == {
        "stencil-sync-loop",
        "stencil-engine",
        "stencil-submit",
    }
    loop = llm._loop_thread.loop
    with recorded_resource_warnings() as resource_warnings:
        del llm
        gc.collect()
    assert len(resource_warnings()) == 1 and "sdk.SyncLLM" in resource_warnings()[0]
    assert_released(new_threads, engine_ref)
    assert loop.is_closed()


def test_a_stream_keeps_its_sync_llm_working() -> None:
    before = set(threading.enumerate())
    engine, engine_ref = engine_and_ref()
    llm = SyncLLM(backend=LocalBackend(engine))
    del engine
    stream = llm.stream(PROMPT, **CALL)
    with recorded_resource_warnings() as resource_warnings:
        del llm
        gc.collect()
        assert resource_warnings() == []
        assert isinstance(list(stream)[-1], str)
        del stream
        gc.collect()
    assert len(resource_warnings()) == 1
    assert_released(threads_since(before), engine_ref)


def test_a_closed_sync_llm_does_not_warn() -> None:
    before = set(threading.enumerate())
    engine, engine_ref = engine_and_ref()
    llm = SyncLLM(backend=LocalBackend(engine))
    del engine
    llm.generate(PROMPT, **CALL)
    llm.close()
    with recorded_resource_warnings() as resource_warnings:
        del llm
        gc.collect()
    assert resource_warnings() == []
    assert_released(threads_since(before), engine_ref)


async def test_a_dropped_llm_over_a_real_tiny_model_frees_its_engine(tmp_path: Path) -> None:
    spec = TinySpec()
    path = write_tiny_gguf(tmp_path / "tiny.gguf", spec, tiny_hf_weights(spec))
    before = set(threading.enumerate())
    llm = LLM(backend=LocalBackend.load(path, dtype="float32", kv_cache_bytes=1 << 20))
    assert isinstance(llm.backend, LocalBackend)
    engine_ref = weakref.ref(llm.backend.engine)
    assert await llm.generate(PROMPT, output=grammars.Choice(["ab", "ba"]), max_tokens=8) in {"ab", "ba"}
    with pytest.warns(ResourceWarning, match="unclosed sdk.LLM"):
        del llm
        gc.collect()
    assert_released(threads_since(before), engine_ref)
