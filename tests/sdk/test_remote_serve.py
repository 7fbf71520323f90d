"""`sdk.LLM(base_url=...)` against the real `stencil serve` app on loopback gives the same typed values
as the local engine (greedy, generating): the constraint travels in the server's dialect and comes back
enforced."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from enum import Enum
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field

import grammars
import sdk
from sdk import SyncLLM
from sdk.backends import LocalBackend, Scores

uvicorn = pytest.importorskip("uvicorn")
server_app = pytest.importorskip("sdk.server.app")

pytestmark = pytest.mark.slow

SERVED_NAME = "smollm2"


class Person(BaseModel):
    name: str = Field(max_length=40)
    age: int = Field(ge=0, le=130)


class Color(Enum):
    RED = "red"
    GREEN = "green"


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    """The embedded model served by `stencil serve`'s app under uvicorn on 127.0.0.1 (a free port)."""
    backend = LocalBackend.load()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    server = uvicorn.Server(
        uvicorn.Config(server_app.create_app(backend, served_model_name=SERVED_NAME), log_level="warning")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30.0
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    server.should_exit = True
    thread.join()
    backend.close()
    listener.close()


class GeneratingBackend(LocalBackend):
    """The local engine, generating closed sets as a server does: it ranks them by score otherwise
    (`sdk.choices`), which an OpenAI-compatible API cannot, and ranking may pick another label."""

    async def score(  # type: ignore[override]  # None is what the base says a non-scoring backend returns
        self, messages: Sequence[Mapping[str, str]], texts: Sequence[str]
    ) -> Scores | None:
        return None


@pytest.fixture(scope="module")
def local() -> Iterator[SyncLLM]:
    with SyncLLM(backend=GeneratingBackend.load()) as llm:
        yield llm


@pytest.fixture(scope="module")
def remote(base_url: str) -> Iterator[SyncLLM]:
    with SyncLLM(base_url=base_url, max_retries=0) as llm:  # model=None: asks GET /models
        yield llm


CASES = [
    ("How many legs does a spider have?", int),
    ("Is the sky green? Answer yes or no.", Literal["yes", "no"]),
    ("Ada Lovelace was 36 years old.", Person),
    ("Write a US zip code.", grammars.Regex(r"\d{5}")),
    ("What color is grass?", Color),
]


@pytest.mark.parametrize(("prompt", "output"), CASES)
def test_remote_values_match_the_local_backend(local: SyncLLM, remote: SyncLLM, prompt: str, output: Any) -> None:
    remote_result = remote.run(prompt, output=output, max_tokens=64)
    assert remote_result.value == local.generate(prompt, output=output, max_tokens=64)
    assert remote_result.usage.prompt_tokens > 0 and remote_result.usage.completion_tokens > 0


def test_the_served_model_is_found_and_samples_vote(remote: SyncLLM) -> None:
    result = remote.run("Pick a number from 1 to 3.", output=Literal["1", "2", "3"], samples=3, seed=1)
    assert result.value in ("1", "2", "3") and result.votes is not None and result.votes.num_samples == 3
    assert remote.backend.model == SERVED_NAME  # type: ignore[attr-defined]


def test_an_unknown_model_is_a_typed_error(base_url: str) -> None:
    with (
        SyncLLM(base_url=base_url, model="another-model", max_retries=0) as llm,
        pytest.raises(sdk.RemoteError) as caught,
    ):
        llm.generate("hi", output=int)
    assert (caught.value.status_code, caught.value.error_type) == (404, "invalid_request_error")


class Unit(Enum):
    CELSIUS = "celsius"
    FAHRENHEIT = "fahrenheit"


def get_weather(city: str, unit: Unit = Unit.CELSIUS) -> str:
    """The current weather in a city."""
    return f"sunny in {city}, 20 {unit.value}"


def test_tools_over_the_wire_come_back_as_validated_calls(remote: SyncLLM) -> None:
    """The server constrains the call (`tools`, `tool_choice`), the SDK reads its `tool_calls`."""
    result = remote.run("What is the weather in Paris?", tools=[get_weather], tool_choice="required", max_tokens=96)
    assert result.tool_calls and result.value == result.tool_calls
    for call in result.tool_calls:
        assert call.name == "get_weather" and isinstance(call.arguments.unit, Unit)
        assert call.invoke() == f"sunny in {call.arguments.city}, 20 {call.arguments.unit.value}"
