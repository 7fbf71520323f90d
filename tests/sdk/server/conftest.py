"""Real servers on 127.0.0.1 for the server tests: uvicorn in a background thread, a free port.

`fake_server` serves the toy engine (fast: the wire format, validation, error mapping);
`gated_server` a toy engine whose forward pass waits for a gate the test opens, behind an API key,
a small body limit and one request in flight (deterministic 401 / 413 / 429 and disconnects);
`smollm2_server` the embedded model, once per session (tests that use it are marked slow).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import torch
import uvicorn

from runtime.engine.llm_engine import Engine
from runtime.model.runner import ForwardBatch
from sdk.backends.local import LocalBackend
from sdk.server import create_app
from tests.runtime.fakes import FakeRunner, smollm2_tokenizer
from tests.sdk.conftest import fake_engine

#: The API key of `gated_server`.
API_KEY = "test-key"
FAKE_MODEL = "fake"
SMOLLM2_MODEL = "SmolLM2-135M-Instruct"
#: `gated_server`'s body limit.
GATED_MAX_BODY_BYTES = 4096


@dataclass(frozen=True)
class RunningServer:
    """A server under test: its base URL (ending in /v1), the engine it drives, its model name."""

    base_url: str
    engine: Engine
    model: str


class GatedRunner(FakeRunner):
    """The toy model, whose forward passes wait for permits the test hands out (unlimited at first)."""

    def __init__(self) -> None:
        super().__init__(num_blocks=512, block_size=4)
        self._condition = threading.Condition()
        self._num_permits: int | None = None  # None: no limit

    def allow(self, num_forwards: int | None) -> None:
        """Let `num_forwards` more passes run (None: any number), then make the next one wait."""
        with self._condition:
            self._num_permits = num_forwards
            self._condition.notify_all()

    def forward(self, batch: ForwardBatch) -> torch.Tensor:
        with self._condition:
            self._condition.wait_for(lambda: self._num_permits is None or self._num_permits > 0)
            if self._num_permits is not None:
                self._num_permits -= 1
        return super().forward(batch)


@pytest.fixture(scope="module")
def fake_server() -> Iterator[RunningServer]:
    yield from _serve(fake_engine(), FAKE_MODEL, max_concurrent_requests=8)


@pytest.fixture(scope="module")
def gated_server() -> Iterator[RunningServer]:
    engine = Engine(GatedRunner(), smollm2_tokenizer())
    yield from _serve(
        engine, FAKE_MODEL, api_key=API_KEY, max_body_bytes=GATED_MAX_BODY_BYTES, max_concurrent_requests=1
    )


@pytest.fixture(scope="session")
def smollm2_server() -> Iterator[RunningServer]:
    import runtime

    yield from _serve(runtime.load(), SMOLLM2_MODEL)


def _serve(engine: Engine, model: str, **options: object) -> Iterator[RunningServer]:
    """Serve `engine` on a free loopback port until the fixture ends."""
    backend = LocalBackend(engine)
    app = create_app(backend, served_model_name=model, **options)  # type: ignore[arg-type]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the test server did not start")
        thread.join(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield RunningServer(f"http://127.0.0.1:{port}/v1", engine, model)
    finally:
        server.should_exit = True
        thread.join()
        backend.close()
