"""`SyncLLM`: the synchronous facade of `LLM`, for scripts and notebooks.

Same methods, parameters and defaults as `LLM` (a test compares the signatures); each call runs the
async implementation on the facade's own event loop in a background thread and waits for it. The
caller's thread never runs an event loop, so the facade works where one is already running
(Jupyter) and in plain scripts alike. Ctrl-C while waiting cancels the call, which frees its memory.

A `SyncLLM` dropped without `close` warns (`ResourceWarning`) when collected and stops its loop
thread then; its `LLM`, collected with it, frees the model. A `SyncStream` keeps its `SyncLLM` alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import weakref
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from typing_extensions import Unpack

from sdk.backends.base import Backend
from sdk.backends.remote import Dialect
from sdk.client import LLM, warn_unclosed
from sdk.errors import ClosedError
from sdk.options import CallOptions, SpeculativeOption, StreamOptions
from sdk.pipelines.mapping import MapResult
from sdk.prompts import PromptInput
from sdk.results import Result
from sdk.streaming import Stream
from sdk.tools import ToolLike

__all__ = ["SyncLLM", "SyncStream"]

T = TypeVar("T")


class _LoopThread:
    """An event loop running forever in a daemon thread; coroutines are submitted to it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        # The thread holds the loop only, so the facade that owns this can be collected.
        self._thread = threading.Thread(target=_run_forever, args=(self.loop,), name="stencil-sync-loop", daemon=True)
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
        """Stop the loop and wait for its thread, which closes it."""
        self.is_stopped = True
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()


class SyncLLM:
    """`LLM` with blocking methods. Arguments, results and errors are those of `LLM`."""

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        backend: Backend | None = None,
        dtype: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        dialect: Dialect | None = None,
        allow_unconstrained: bool = False,
        timeout: float | None = None,
        max_retries: int | None = None,
        speculative: SpeculativeOption = None,
    ) -> None:
        self._llm = LLM(
            model,
            backend=backend,
            dtype=dtype,
            base_url=base_url,
            api_key=api_key,
            dialect=dialect,
            allow_unconstrained=allow_unconstrained,
            timeout=timeout,
            max_retries=max_retries,
            speculative=speculative,
        )
        self._loop_thread = _LoopThread()
        # This facade is what the caller holds and drops: it warns, in its inner LLM's stead.
        self._llm._finalizer.detach()
        self._finalizer = weakref.finalize(self, _drop_unclosed, self._loop_thread.loop)

    @property
    def backend(self) -> Backend:
        """The backend the calls run on."""
        return self._llm.backend

    def generate(
        self,
        prompt: PromptInput,
        *,
        output: Any = None,
        **options: Unpack[CallOptions],
    ) -> Any:
        """Blocking `LLM.generate`."""
        return self._wait(self._llm.generate(prompt, output=output, **options))

    def run(
        self,
        prompt: PromptInput,
        *,
        output: Any = None,
        **options: Unpack[CallOptions],
    ) -> Result[Any]:
        """Blocking `LLM.run`."""
        return self._wait(self._llm.run(prompt, output=output, **options))

    def stream(
        self,
        prompt: PromptInput,
        *,
        output: Any = None,
        **options: Unpack[StreamOptions],
    ) -> SyncStream[Any]:
        """Blocking `LLM.stream`: iterate with a plain `for`; `result` is set afterwards."""
        return SyncStream(self._llm.stream(prompt, output=output, **options), self._wait)

    def run_tools(
        self,
        prompt: str | Sequence[Mapping[str, Any]],
        tools: Sequence[ToolLike],
        /,
        *,
        output: Any = None,
        max_turns: int = 5,
        **options: Unpack[CallOptions],
    ) -> Result[Any]:
        """Blocking `LLM.run_tools` (async tool functions run on the facade's loop)."""
        return self._wait(self._llm.run_tools(prompt, tools, output=output, max_turns=max_turns, **options))

    def map(
        self,
        prompts: Iterable[PromptInput],
        *,
        output: Any = None,
        ordered: bool = True,
        max_concurrency: int | None = None,
        **options: Unpack[CallOptions],
    ) -> Iterator[MapResult[Any]]:
        """Blocking `LLM.map`: iterate with a plain `for`; leaving the loop early cancels the calls still running."""
        outcomes = self._llm.map(prompts, output=output, ordered=ordered, max_concurrency=max_concurrency, **options)
        return _blocking(outcomes, self._wait)

    def close(self) -> None:
        """Stop the engine thread and the event loop; calls after this raise `ClosedError`."""
        if self._loop_thread.is_stopped:
            return
        self._loop_thread.run(self._llm.aclose())
        self._loop_thread.stop()
        self._finalizer.detach()

    def _wait(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run `coroutine` on this facade's loop and wait for it (see `_LoopThread.run`)."""
        return self._loop_thread.run(coroutine)

    def __enter__(self) -> SyncLLM:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class SyncStream(Iterable[T]):
    """A `Stream` read from a synchronous thread; see `sdk.Stream`.

    Iterate it once with a plain `for`; leaving the loop early (`break`, an exception in its body),
    `close()` or the end of a `with stream:` block stops the generation and frees its memory at once.
    """

    def __init__(self, stream: Stream[T], wait: Callable[[Coroutine[Any, Any, Any]], Any]) -> None:
        self._stream = stream
        self._partials = stream.__aiter__()
        self._wait = wait  # the SyncLLM's: it keeps the SyncLLM, and so its loop, alive

    @property
    def result(self) -> Result[T] | None:
        """The final `Result`, once iteration has ended."""
        return self._stream.result

    def __iter__(self) -> Iterator[T]:
        # A generator: the loop that drops it early closes it, and so the stream, at once.
        try:
            while True:
                try:
                    yield self._wait(_next(self._partials))
                except StopAsyncIteration:
                    return
        finally:
            self.close()

    def close(self) -> None:
        """Stop the generation now (no effect after the end, or once the `SyncLLM` is closed)."""
        with contextlib.suppress(ClosedError):  # closing the LLM has stopped every generation
            self._wait(self._stream.aclose())

    def __enter__(self) -> SyncStream[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _blocking(outcomes: AsyncGenerator[T, None], wait: Callable[[Coroutine[Any, Any, Any]], Any]) -> Iterator[T]:
    """An async generator read from a synchronous thread; closed (its work cancelled) when the caller stops."""
    try:
        while True:
            try:
                yield wait(_next(outcomes))
            except StopAsyncIteration:
                return
    finally:
        with contextlib.suppress(ClosedError):
            wait(outcomes.aclose())


def _run_forever(loop: asyncio.AbstractEventLoop) -> None:
    """The loop thread: run until stopped, then close the loop."""
    try:
        loop.run_forever()
    finally:
        loop.close()


def _drop_unclosed(loop: asyncio.AbstractEventLoop) -> None:
    """A `SyncLLM` was collected unclosed: warn, and let its loop thread end (without waiting: this
    may run on any thread, that one included)."""
    warn_unclosed("sdk.SyncLLM", "llm.close()")
    loop.call_soon_threadsafe(loop.stop)


async def _next(partials: Any) -> Any:
    return await partials.__anext__()
