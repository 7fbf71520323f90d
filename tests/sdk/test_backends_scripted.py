"""ScriptedBackend: the in-package fake that replays completions for tests of code using an LLM."""

from __future__ import annotations

import pytest

import sdk
from runtime.engine.sampling_params import SamplingParams
from runtime.engine.sequence import FinishReason
from sdk.backends import BackendRequest, Scripted, ScriptedBackend

REQUEST = BackendRequest([{"role": "user", "content": "hi there"}], SamplingParams(n=2))


async def test_replays_one_entry_per_request_in_chunks_with_usage() -> None:
    backend = ScriptedBackend([["abcdef", Scripted("xy", FinishReason.LENGTH)]])
    updates = [update async for update in backend.stream(REQUEST)]
    assert [update.text for update in updates[:-1]] == ["abcd", "ef"]
    output = updates[-1].output
    assert [c.text for c in output.outputs] == ["abcdef", "xy"]
    assert [c.finish_reason for c in output.outputs] == ["stop", "length"]
    assert output.usage.completion_tokens == 2 + 1 and backend.requests == [REQUEST]


async def test_a_function_script_sees_the_request_and_running_out_is_an_sdk_error() -> None:
    echo = ScriptedBackend(lambda request: request.messages[-1]["content"].upper())
    assert (await sdk.LLM(backend=echo).generate("shout")) == "SHOUT"
    with pytest.raises(sdk.SDKError, match="1 entries"):
        backend = ScriptedBackend(["once"])
        for _ in range(2):
            await sdk.LLM(backend=backend).generate("again")
