"""SyncLLM: the same API as LLM, blocking, and usable where an event loop already runs (Jupyter)."""

from __future__ import annotations

import inspect
import re

import pytest

import grammars
import sdk
from runtime.engine.llm_engine import Engine
from sdk import LLM, SyncLLM
from sdk.backends import LocalBackend, ScriptedBackend
from tests.sdk.conftest import assert_pool_whole


@pytest.mark.parametrize("name", ["__init__", "generate", "run", "stream"])
def test_methods_have_the_same_parameters_and_defaults(name: str) -> None:
    async_parameters = inspect.signature(getattr(LLM, name)).parameters
    sync_parameters = inspect.signature(getattr(SyncLLM, name)).parameters
    assert list(async_parameters) == list(sync_parameters)
    for parameter in async_parameters.values():
        twin = sync_parameters[parameter.name]
        assert (twin.kind, twin.default, twin.annotation) == (parameter.kind, parameter.default, parameter.annotation)


def test_public_methods_match() -> None:
    def public(cls: type) -> set[str]:
        return {name for name in vars(cls) if not name.startswith("_")}

    assert public(LLM) - {"aclose"} == public(SyncLLM) - {"close", "backend"} == {"generate", "run", "stream"}


def test_generate_and_run_block_until_the_value(engine: Engine) -> None:
    with SyncLLM(backend=LocalBackend(engine)) as llm:
        value = llm.generate("n", output=grammars.Regex(r"[0-9]{2}"), max_tokens=4)
        result = llm.run("n", output=grammars.Regex(r"[0-9]{2}"), max_tokens=4)
    assert re.fullmatch(r"[0-9]{2}", value) and result.value == value
    assert_pool_whole(engine)


async def test_it_works_inside_a_running_event_loop(engine: Engine) -> None:
    llm = SyncLLM(backend=LocalBackend(engine))  # as in a notebook cell: this test's loop is running
    try:
        assert len(llm.generate("x", output=grammars.Regex("[a-z]{3}"), max_tokens=4)) == 3
    finally:
        llm.close()


def test_stream_iterates_and_keeps_the_result() -> None:
    with SyncLLM(backend=ScriptedBackend(['{"a": 1, "b": 2}'])) as llm:
        stream = llm.stream("?", output={"type": "object"})
        values = list(stream)
    assert values == [{"a": 1}, {"a": 1, "b": 2}] and stream.result.value == {"a": 1, "b": 2}


def test_errors_are_the_async_ones_and_closing_is_final() -> None:
    llm = SyncLLM(backend=ScriptedBackend(["[1, 2"]))
    with pytest.raises(sdk.ValidationError):
        llm.generate("?", output=list[int])
    with pytest.raises(sdk.RequestError):
        llm.generate("?", samples=0)
    llm.close()
    llm.close()
    with pytest.raises(sdk.ClosedError):
        llm.generate("?")
