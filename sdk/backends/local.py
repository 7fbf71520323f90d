"""The local backend: the in-process runtime engine, stepped by one background thread.

Requests from any number of coroutines (and event loops) join one engine. A single thread steps the
engine while it has requests and sleeps when it has none; each step's updates go to their callers'
event loops with `loop.call_soon_threadsafe`, one callback per loop per step. The scheduler batches
every live request into each forward pass, so concurrent calls share the model's time.

Cancelling a call (or closing its stream) aborts its engine request on the spot: the sequences and
their KV blocks are freed before the cancellation returns, even mid-step.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import runtime
from runtime.engine.llm_engine import Engine
from runtime.engine.outputs import RequestUpdate
from sdk.backends.base import Backend, BackendRequest
from sdk.errors import ClosedError

__all__ = ["LocalBackend"]

_Deliver = Callable[[RequestUpdate | BaseException], None]


class LocalBackend(Backend):
    """Generation on a local `runtime.Engine`.

    Args:
        engine: the engine to drive; this backend becomes its only stepper.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._handlers: dict[str, tuple[asyncio.AbstractEventLoop, _Deliver]] = {}
        self._handlers_lock = threading.Lock()
        self._wakeup = threading.Event()
        self._request_ids = itertools.count()
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()
        self._is_closed = False
        # One submitting thread: requests join the engine in call order, off the event loop.
        self._submitter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stencil-submit")

    @classmethod
    def load(cls, model: str | os.PathLike[str] | None = None, **load_options: Any) -> LocalBackend:
        """Load a model (see `runtime.load`) and wrap its engine.

        Raises:
            runtime.ModelLoadError: the model cannot be loaded.
            runtime.RequestError: a load option that is not valid.
        """
        return cls(runtime.load(model, **load_options))

    async def stream(self, request: BackendRequest) -> AsyncIterator[RequestUpdate]:
        """See `Backend.stream`."""
        if self._is_closed:
            raise ClosedError("the LLM is closed")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[RequestUpdate | BaseException] = asyncio.Queue()
        request_id = f"sdk-{next(self._request_ids)}"
        with self._handlers_lock:
            self._handlers[request_id] = (loop, queue.put_nowait)
        is_finished = False
        try:
            await self._submit(request_id, request)
            while True:
                update = await queue.get()
                if isinstance(update, BaseException):
                    raise update
                is_finished = update.is_finished
                yield update
                if is_finished:
                    return
        finally:
            with self._handlers_lock:
                self._handlers.pop(request_id, None)
            if not is_finished:
                self.engine.abort_request(request_id)

    async def _submit(self, request_id: str, request: BackendRequest) -> None:
        """Tokenize and queue the request off the event loop (building a matcher may compute masks),
        then wake the stepping thread."""
        submitted = asyncio.get_running_loop().run_in_executor(self._submitter, self._add_request, request_id, request)
        try:
            await asyncio.shield(submitted)
        except asyncio.CancelledError:
            # The add may still land after the cancellation: abort it then, so nothing runs orphaned.
            submitted.add_done_callback(lambda _: self.engine.abort_request(request_id))
            raise
        self._ensure_thread()
        self._wakeup.set()

    def _add_request(self, request_id: str, request: BackendRequest) -> None:
        prompt_ids = self.engine.tokenizer.apply_chat_template(
            list(request.messages), add_generation_prompt=True, tokenize=True
        )
        try:
            self.engine.add_request(prompt_ids, request.params, request.constraint, request_id=request_id)
        except runtime.RequestError as exc:
            if exc.field == "n":  # the runtime's `n` is what the caller asked for as `samples`
                raise runtime.RequestError(exc.reason, "samples") from exc
            raise

    def _ensure_thread(self) -> None:
        with self._thread_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="stencil-engine", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        """The stepping loop: step while requests exist, sleep until the next one arrives."""
        while not self._is_closed:
            self._wakeup.clear()
            if not self.engine.has_unfinished_requests():
                self._wakeup.wait()
                continue
            try:
                updates = self.engine.step()
            except Exception as exc:  # any engine failure must reach every caller, not kill the thread
                self._fail_all(exc)
                continue
            if updates:
                self._deliver(updates)

    def _deliver(self, updates: list[RequestUpdate]) -> None:
        """Hand each update to its caller's event loop, one callback per loop."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Deliver, RequestUpdate]]] = {}
        with self._handlers_lock:
            for update in updates:
                handler = self._handlers.get(update.request_id)
                if handler is not None:
                    by_loop.setdefault(handler[0], []).append((handler[1], update))
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver_all, items)
            except RuntimeError:  # the caller's loop is closed: nobody waits for these requests
                for _, update in items:
                    self.engine.abort_request(update.request_id)

    def _fail_all(self, exc: Exception) -> None:
        """An engine step failed: every live request gets the error and is aborted."""
        with self._handlers_lock:
            handlers = list(self._handlers.items())
        for request_id, (loop, deliver) in handlers:
            self.engine.abort_request(request_id)
            try:
                loop.call_soon_threadsafe(deliver, exc)
            except RuntimeError:
                continue

    async def aclose(self) -> None:
        """Stop the stepping thread and abort whatever is still running."""
        self.close()

    def close(self) -> None:
        """Synchronous `aclose`: calls still running end with `ClosedError`."""
        self._is_closed = True
        self._wakeup.set()
        self._fail_all(ClosedError("the LLM was closed while this call was running"))
        self._submitter.shutdown(wait=False)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()


def _deliver_all(items: list[tuple[_Deliver, RequestUpdate]]) -> None:
    for deliver, update in items:
        deliver(update)
