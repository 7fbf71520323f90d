"""SyncLLM: the same API as LLM, blocking, and usable where an event loop already runs (Jupyter)."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import get_args, get_type_hints

import pytest

import grammars
import sdk
from runtime.engine.llm_engine import Engine
from runtime.engine.sequence import FinishReason
from sdk import LLM, SyncLLM
from sdk.backends import LocalBackend, Scripted, ScriptedBackend
from sdk.options import CALL_OPTIONS, STREAM_OPTIONS, Default
from tests.sdk.conftest import assert_pool_whole, hold_steps_until_aborted


def keywords(method: Callable[..., object]) -> dict[str, tuple[object, object]]:
    """A method's keyword arguments with their types and defaults, `**options: Unpack[...]` expanded
    (what an editor shows)."""
    found: dict[str, tuple[object, object]] = {}
    for parameter in inspect.signature(method, eval_str=True).parameters.values():
        if parameter.kind is parameter.VAR_KEYWORD:
            (declaration,) = get_args(parameter.annotation)
            for name, hint in get_type_hints(declaration, include_extras=True).items():
                (default,) = [meta.value for meta in hint.__metadata__ if isinstance(meta, Default)]
                found[name] = (get_args(hint)[0], default)
        elif parameter.kind is parameter.KEYWORD_ONLY:
            found[parameter.name] = (parameter.annotation, parameter.default)
    return found


@pytest.mark.parametrize("name", ["__init__", "generate", "map", "run", "stream"])
def test_methods_have_the_same_parameters_and_defaults(name: str) -> None:
    async_signature = inspect.signature(getattr(LLM, name), eval_str=True)
    sync_signature = inspect.signature(getattr(SyncLLM, name), eval_str=True)
    assert list(async_signature.parameters) == list(sync_signature.parameters)
    for parameter in async_signature.parameters.values():
        twin = sync_signature.parameters[parameter.name]
        assert (twin.kind, twin.default, twin.annotation) == (parameter.kind, parameter.default, parameter.annotation)
    assert keywords(getattr(LLM, name)) == keywords(getattr(SyncLLM, name))


@pytest.mark.parametrize(
    ("name", "declared"), [("generate", CALL_OPTIONS), ("run", CALL_OPTIONS), ("stream", STREAM_OPTIONS)]
)
def test_call_methods_take_the_declared_options_after_prompt_and_output(name: str, declared: frozenset[str]) -> None:
    parameters = list(inspect.signature(getattr(SyncLLM, name)).parameters.values())
    assert [(p.name, p.kind) for p in parameters[1:3]] == [
        ("prompt", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        ("output", inspect.Parameter.KEYWORD_ONLY),
    ]
    expanded = keywords(getattr(SyncLLM, name))
    assert set(expanded) == {"output"} | declared
    assert expanded["max_tokens"] == (int, 512) and expanded["temperature"] == (float | None, None)


def test_public_methods_match() -> None:
    def public(cls: type) -> set[str]:
        return {name for name in vars(cls) if not name.startswith("_")}

    assert (
        public(LLM) - {"aclose"}
        == public(SyncLLM) - {"close", "backend"}
        == {"generate", "map", "run", "run_tools", "stream"}
    )


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
    assert values == [{"a": 1}, {"a": 1, "b": 2}]
    assert stream.result is not None and stream.result.value == {"a": 1, "b": 2}


def test_errors_are_the_async_ones_and_closing_is_final() -> None:
    llm = SyncLLM(backend=ScriptedBackend(["[1, 2"]))
    with pytest.raises(sdk.ValidationError):
        llm.generate("?", output=list[int])
    with pytest.raises(sdk.RequestError):
        llm.generate("?", samples=0)
    with pytest.raises(sdk.RequestError) as unknown:
        llm.run("?", temprature=0.5)  # type: ignore[call-arg]
    assert unknown.value.field == "temprature"
    with pytest.raises(sdk.RequestError) as not_streamed:
        llm.stream("?", retries=1)  # type: ignore[call-arg]
    assert not_streamed.value.field == "retries"
    llm.close()
    llm.close()
    with pytest.raises(sdk.ClosedError):
        llm.generate("?")


def test_free_text_cut_by_max_tokens_is_returned() -> None:
    with SyncLLM(backend=ScriptedBackend([Scripted("Once upon a", FinishReason.LENGTH)])) as llm:
        result = llm.run("A story?")
    assert (result.value, result.finish_reason) == ("Once upon a", "length")


def test_leaving_a_for_loop_early_frees_the_engine_at_once(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    hold_steps_until_aborted(engine, monkeypatch)
    with SyncLLM(backend=LocalBackend(engine)) as llm:
        for text in llm.stream("go on", max_tokens=400):
            assert text and engine.has_unfinished_requests()
            break
        assert_pool_whole(engine)
        stream = llm.stream("go on", max_tokens=400)  # held by a name: the loop's iterator still goes
        with pytest.raises(KeyError):
            for _ in stream:
                raise KeyError("the caller's own bug")
        assert_pool_whole(engine)
        assert stream.result is None


def test_closing_a_stream_midway_frees_the_engine_at_once(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    hold_steps_until_aborted(engine, monkeypatch)
    with SyncLLM(backend=LocalBackend(engine)) as llm:
        stream = llm.stream("go on", max_tokens=400)
        partials = iter(stream)
        assert next(partials)
        stream.close()
        assert_pool_whole(engine)
        assert list(partials) == []
