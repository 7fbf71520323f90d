"""Streaming: where top-level JSON elements complete, partial typed values, and LLM.stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Literal

import pytest
from pydantic import BaseModel, Field
from typing_extensions import TypedDict

import grammars
import sdk
from runtime.engine.llm_engine import Engine
from runtime.engine.outputs import RequestUpdate
from runtime.engine.sequence import FinishReason
from sdk import LLM
from sdk.backends import Scripted, ScriptedBackend
from sdk.backends.base import BackendRequest
from sdk.outputs import output_spec
from sdk.streaming import PartialJSON, partial_value
from tests.sdk.conftest import assert_pool_whole, hold_steps_until_aborted


class Card(BaseModel):
    title: str
    tags: list[str]
    stars: int = Field(ge=1, le=5)
    kind: Literal["book", "film"] = "book"


def feed_all(text: str, chunk: int) -> list[object]:
    scanner, prefixes = PartialJSON(), []
    for start in range(0, len(text), chunk):
        if scanner.feed(text[start : start + chunk]):
            prefixes.append(scanner.complete_prefix())
    return prefixes


def test_elements_complete_at_top_level_commas_only() -> None:
    text = '{"title": "a, {b} [c] \\"d\\"", "tags": ["x", "y"], "stars": 4}'
    assert feed_all(text, 1) == [
        {"title": 'a, {b} [c] "d"'},
        {"title": 'a, {b} [c] "d"', "tags": ["x", "y"]},
        {"title": 'a, {b} [c] "d"', "tags": ["x", "y"], "stars": 4},
    ]
    assert feed_all(text, 1000) == [{"title": 'a, {b} [c] "d"', "tags": ["x", "y"], "stars": 4}]


def test_a_partial_model_has_its_complete_fields_validated_and_the_rest_none() -> None:
    spec = output_spec(Card)
    partial = partial_value(spec, {"title": "Dune", "stars": 9})
    assert isinstance(partial, Card)
    assert partial.title == "Dune" and partial.tags is None and partial.kind == "book"
    assert partial.model_fields_set == {"title"}  # stars=9 breaks its bound: left out until the end


def test_partial_lists_keep_their_valid_items() -> None:
    assert partial_value(output_spec(list[int]), [1, "2", "x"]) == [1, 2]
    assert partial_value(output_spec({"type": "object"}), {"a": 1}) == {"a": 1}
    assert partial_value(output_spec(int), [1]) is None


async def test_stream_yields_growing_partials_then_the_final_object() -> None:
    text = '{"title": "Dune", "tags": ["sf", "classic"], "stars": 5, "kind": "book"}'
    llm = LLM(backend=ScriptedBackend([text]))
    stream = llm.stream("Dune?", output=Card)
    values = [value async for value in stream]
    fields_set = [sorted(v.model_fields_set) for v in values[:-1]]
    assert fields_set == [["title"], ["tags", "title"], ["stars", "tags", "title"]]
    assert values[-1] == Card(title="Dune", tags=["sf", "classic"], stars=5, kind="book")
    assert stream.result is not None and stream.result.value == values[-1] and stream.result.usage.completion_tokens


async def test_stream_with_reasoning_parses_only_the_answer() -> None:
    text = 'Tags: "a, b", fine.\nAnswer: {"title": "X", "tags": [], "stars": 1}'
    stream = LLM(backend=ScriptedBackend([text])).stream("?", output=Card, reasoning=True)
    values = [value async for value in stream]
    assert values[0].model_fields_set == {"title"} and values[-1].stars == 1
    assert stream.result is not None and stream.result.reasoning == 'Tags: "a, b", fine.'


async def test_text_streams_its_text_so_far() -> None:
    stream = LLM(backend=ScriptedBackend(["abcdefghij"])).stream("?", output=grammars.Regex("[a-j]+"))
    assert [value async for value in stream] == ["abcd", "abcdefgh", "abcdefghij", "abcdefghij"]


async def test_partials_find_fields_under_their_validation_alias() -> None:
    class Named(BaseModel):
        full_name: str = Field(validation_alias="fullName")
        age: int

    text = '{"fullName": "Ada", "age": 36}'
    values = [value async for value in LLM(backend=ScriptedBackend([text])).stream("?", output=Named)]
    assert values[0].full_name == "Ada" and values[-1] == Named.model_validate({"fullName": "Ada", "age": 36})


async def test_dict_and_typed_dict_outputs_stream_their_valid_entries() -> None:
    class Stock(TypedDict):
        item: str
        count: int

    text = '{"pens": 3, "ink": "x", "pads": 1}'
    counts = [value async for value in LLM(backend=ScriptedBackend([text])).stream("?", output=dict[str, int | str])]
    assert counts[0] == {"pens": 3} and counts[-1] == {"pens": 3, "ink": "x", "pads": 1}
    text = '{"item": "pen", "count": 3}'
    stock = [value async for value in LLM(backend=ScriptedBackend([text])).stream("?", output=Stock)]
    assert stock == [{"item": "pen"}, {"item": "pen", "count": 3}]  # a partial, then the final value


async def test_text_after_reasoning_streams_the_answer_so_far_when_the_separator_comes_late() -> None:
    text = "Add.\nAnswer: 3 apples"  # the scripted backend sends 4 characters at a time: the marker ends one
    values = [value async for value in LLM(backend=ScriptedBackend([text])).stream("?", reasoning=True)]
    assert values == ["3 a", "3 apple", "3 apples", "3 apples"]


async def test_stream_rejects_bad_arguments_before_iterating_and_reports_errors_while_iterating() -> None:
    llm = LLM(backend=ScriptedBackend(['{"title": "X", "tags": [], "stars": 7}']))
    with pytest.raises(sdk.RequestError):
        llm.stream("?", output=Card, temperature=-1)
    with pytest.raises(sdk.ValidationError):
        async for _ in llm.stream("?", output=Card):
            pass


async def test_leaving_an_async_with_stream_early_frees_the_engine_at_once(llm: LLM, engine: Engine) -> None:
    async with llm.stream("go on", max_tokens=400) as stream:
        async for text in stream:
            assert text
            break
    assert_pool_whole(engine)


# Free text cut by max_tokens, and leaving a stream early.


async def test_free_text_cut_by_max_tokens_streams_and_ends_with_finish_reason_length() -> None:
    llm = LLM(backend=ScriptedBackend([Scripted("Once upon a time", FinishReason.LENGTH)]))
    stream = llm.stream("A story?")
    values = [value async for value in stream]
    assert values == ["Once", "Once upo", "Once upon a ", "Once upon a time", "Once upon a time"]
    assert stream.result is not None and stream.result.finish_reason == "length"


async def test_a_typed_stream_cut_by_max_tokens_raises_after_its_partials() -> None:
    llm = LLM(backend=ScriptedBackend([Scripted('{"title": "X", "tags": [', FinishReason.LENGTH)]))
    partials = []
    with pytest.raises(sdk.IncompleteOutputError):
        async for partial in llm.stream("?", output=Card):
            partials.append(partial)
    assert [p.model_fields_set for p in partials] == [{"title"}]


async def test_breaking_out_of_a_stream_frees_the_engine_at_once(
    llm: LLM, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    hold_steps_until_aborted(engine, monkeypatch)
    async for text in llm.stream("go on", max_tokens=400):
        assert text
        assert engine.has_unfinished_requests()
        break
    assert_pool_whole(engine)
    stream = llm.stream("go on", max_tokens=400)  # held by a name: the loop's iterator still goes
    async for _ in stream:
        break
    assert_pool_whole(engine)
    assert stream.result is None


async def test_an_exception_in_the_loop_body_frees_the_engine_at_once(
    llm: LLM, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    hold_steps_until_aborted(engine, monkeypatch)
    with pytest.raises(KeyError):
        async for _ in llm.stream("go on", max_tokens=400):
            raise KeyError("the caller's own bug")
    assert_pool_whole(engine)


async def test_a_cleanup_that_waits_is_finished_by_the_loop() -> None:
    class SlowToClose(ScriptedBackend):
        is_cleaned_up = False

        async def stream(self, request: BackendRequest) -> AsyncGenerator[RequestUpdate, None]:
            try:
                async for update in super().stream(request):
                    yield update
            finally:
                await asyncio.sleep(0)  # a remote backend would close its connection here
                self.is_cleaned_up = True

    backend = SlowToClose(["a long answer"])
    async for _ in LLM(backend=backend).stream("?"):
        break
    for _ in range(10):  # a few turns of the loop; no clock involved
        await asyncio.sleep(0)
    assert backend.is_cleaned_up
