"""`SyncLLM`: the synchronous facade of `LLM`, for scripts and notebooks.

Same methods, parameters and defaults as `LLM` (a test compares the signatures); each call runs the
async implementation on the facade's own event loop in a background thread and waits for it. The
caller's thread never runs an event loop, so the facade works where one is already running
(Jupyter) and in plain scripts alike. Ctrl-C while waiting cancels the call, which frees its memory.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine, Iterator, Sequence
from typing import Any, TypeVar

from sdk.backends.base import Backend
from sdk.client import LLM
from sdk.errors import ClosedError
from sdk.options import DEFAULT_MAX_TOKENS, call_arguments
from sdk.prompts import PromptInput
from sdk.results import Result
from sdk.streaming import Stream
from sdk.voting import VoteKey

__all__ = ["SyncLLM", "SyncStream"]

T = TypeVar("T")


class _LoopThread:
    """An event loop running forever in a daemon thread; coroutines are submitted to it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="stencil-sync-loop", daemon=True)
        self._thread.start()
        self.is_stopped = False

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run `coroutine` on the loop and wait for its result (Ctrl-C cancels it).

        Raises:
            ClosedError: the loop was stopped (the facade is closed).
        """
        if self.is_stopped:
            coroutine.close()
            raise ClosedError("the LLM is closed")
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result()
        except KeyboardInterrupt:
            future.cancel()
            raise

    def stop(self) -> None:
        self.is_stopped = True
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class SyncLLM:
    """`LLM` with blocking methods. Arguments, results and errors are those of `LLM`."""

    def __init__(
        self, model: str | os.PathLike[str] | None = None, *, backend: Backend | None = None, dtype: str | None = None
    ) -> None:
        self._llm = LLM(model, backend=backend, dtype=dtype)
        self._loop_thread = _LoopThread()

    @property
    def backend(self) -> Backend:
        """The backend the calls run on."""
        return self._llm.backend

    def generate(
        self,
        prompt: PromptInput,
        *,
        output: Any = None,
        reasoning: bool = False,
        max_reasoning_tokens: int | None = None,
        samples: int = 1,
        vote_on: VoteKey = None,
        retries: int = 0,
        describe_output: bool = True,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float = 1.0,
        min_p: float = 0.0,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
        repetition_penalty: float = 1.0,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        num_beams: int = 1,
        length_penalty: float = 1.0,
    ) -> Any:
        """Blocking `LLM.generate`."""
        return self._loop_thread.run(self._llm.generate(**call_arguments(locals())))

    def run(
        self,
        prompt: PromptInput,
        *,
        output: Any = None,
        reasoning: bool = False,
        max_reasoning_tokens: int | None = None,
        samples: int = 1,
        vote_on: VoteKey = None,
        retries: int = 0,
        describe_output: bool = True,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float = 1.0,
        min_p: float = 0.0,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
        repetition_penalty: float = 1.0,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        num_beams: int = 1,
        length_penalty: float = 1.0,
    ) -> Result[Any]:
        """Blocking `LLM.run`."""
        return self._loop_thread.run(self._llm.run(**call_arguments(locals())))

    def stream(
        self,
        prompt: PromptInput,
        *,
        output: Any = None,
        reasoning: bool = False,
        max_reasoning_tokens: int | None = None,
        describe_output: bool = True,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float = 1.0,
        min_p: float = 0.0,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
        repetition_penalty: float = 1.0,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        num_beams: int = 1,
        length_penalty: float = 1.0,
    ) -> SyncStream[Any]:
        """Blocking `LLM.stream`: iterate with a plain `for`; `result` is set afterwards."""
        return SyncStream(self._llm.stream(**call_arguments(locals())), self._loop_thread)

    def close(self) -> None:
        """Stop the engine thread and the event loop; calls after this raise `ClosedError`."""
        if self._loop_thread.is_stopped:
            return
        self._loop_thread.run(self._llm.aclose())
        self._loop_thread.stop()

    def __enter__(self) -> SyncLLM:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class SyncStream(Iterator[T]):
    """A `Stream` read from a synchronous thread; see `sdk.Stream`."""

    def __init__(self, stream: Stream[T], loop_thread: _LoopThread) -> None:
        self._stream = stream
        self._partials = stream.__aiter__()
        self._loop_thread = loop_thread

    @property
    def result(self) -> Result[T] | None:
        """The final `Result`, once iteration has ended."""
        return self._stream.result

    def __iter__(self) -> SyncStream[T]:
        return self

    def __next__(self) -> T:
        try:
            return self._loop_thread.run(_next(self._partials))
        except StopAsyncIteration:
            raise StopIteration from None

    def close(self) -> None:
        """Stop the generation now (no effect after the end)."""
        self._loop_thread.run(self._stream.aclose())

    def __enter__(self) -> SyncStream[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


async def _next(partials: Any) -> Any:
    return await partials.__anext__()
