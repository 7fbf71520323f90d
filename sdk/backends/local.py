"""The local backend: the in-process runtime engine, stepped by one background thread.

Requests from any number of coroutines (and event loops) join one engine. A single thread steps the
engine while it has requests and sleeps when it has none; each step's updates go to their callers'
event loops with `loop.call_soon_threadsafe`, one callback per loop per step. The scheduler batches
every live request into each forward pass, so concurrent calls share the model's time.

Cancelling a call (or closing its stream) aborts its engine request on the spot: the sequences and
their KV blocks are freed before the cancellation returns, even mid-step.

The threads hold the `_Stepper` (the engine and the callers' handlers), never the `LocalBackend`: a
backend dropped without `close` is collected, its finalizer stops the threads, and they let go of
the engine (a model's gigabytes) as they exit.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import weakref
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import runtime
from runtime.engine.llm_engine import Engine
from runtime.engine.outputs import RequestUpdate, Usage
from sdk.backends.base import Backend, BackendRequest, Scores
from sdk.errors import ClosedError
from sdk.tools.format import ToolFormat, detect_tool_format

__all__ = ["LocalBackend"]

_Deliver = Callable[[RequestUpdate | BaseException], None]


class LocalBackend(Backend):
    """Generation on a local `runtime.Engine`.

    Args:
        engine: the engine to drive; this backend becomes its only stepper.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._stepper = _Stepper(engine)
        self._request_ids = itertools.count()
        # Dropped without `close`: stop the threads, which hold the stepper but not this backend.
        self._stop = weakref.finalize(self, self._stepper.stop)

    @classmethod
    def load(cls, model: str | os.PathLike[str] | None = None, **load_options: Any) -> LocalBackend:
        """Load a model (see `runtime.load`) and wrap its engine.

        Raises:
            runtime.ModelLoadError: the model cannot be loaded.
            runtime.RequestError: a load option that is not valid.
        """
        return cls(runtime.load(model, **load_options))

    @property
    def tool_format(self) -> ToolFormat:
        """`HERMES` when the model's chat template writes tools itself (they go in as the `tools`
        template variable), else the generic format."""
        return detect_tool_format(self.engine.tokenizer.chat_template)

    async def stream(self, request: BackendRequest) -> AsyncGenerator[RequestUpdate, None]:
        """See `Backend.stream`."""
        stepper = self._stepper
        if stepper.is_closed:
            raise ClosedError("the LLM is closed")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[RequestUpdate | BaseException] = asyncio.Queue()
        request_id = f"sdk-{next(self._request_ids)}"
        with stepper.handlers_lock:
            stepper.handlers[request_id] = (loop, queue.put_nowait)
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
            with stepper.handlers_lock:
                stepper.handlers.pop(request_id, None)
            if not is_finished:
                self.engine.abort_request(request_id)

    async def score(self, messages: Sequence[Mapping[str, str]], texts: Sequence[str]) -> Scores:
        """See `Backend.score`: `runtime.Engine.score`, run on the submitting thread (in call order
        with new requests, off the event loop); it waits for the step in progress to end."""
        if self._stepper.is_closed:
            raise ClosedError("the LLM is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._stepper.submitter, _score, self.engine, list(messages), list(texts))

    async def _submit(self, request_id: str, request: BackendRequest) -> None:
        """Tokenize and queue the request off the event loop (building a matcher may compute masks),
        then wake the stepping thread."""
        submitted = asyncio.get_running_loop().run_in_executor(
            self._stepper.submitter, _add_request, self.engine, request_id, request
        )
        try:
            await asyncio.shield(submitted)
        except asyncio.CancelledError:
            # The add may still land after the cancellation: abort it then, so nothing runs orphaned.
            engine = self.engine
            submitted.add_done_callback(lambda _: engine.abort_request(request_id))
            raise
        self._stepper.wake()

    async def aclose(self) -> None:
        """Stop the stepping thread and abort whatever is still running."""
        self.close()

    def close(self) -> None:
        """Synchronous `aclose`: calls still running end with `ClosedError`."""
        self._stop()
        self._stepper.fail_all(ClosedError("the LLM was closed while this call was running"))
        self._stepper.join()


def _add_request(engine: Engine, request_id: str, request: BackendRequest) -> None:
    """Render, tokenize and queue one request (on the submitting thread).

    Raises:
        runtime.PromptTooLongError: the prompt cannot fit the context window; a prompt whose length in
            bytes already shows it is refused before it is tokenized.
        runtime.RequestError: what `Engine.add_request` refuses (`n` reported as "samples").
    """
    prompt_ids = (
        list(request.prompt_token_ids)
        if request.prompt_token_ids is not None
        else engine.tokenizer.apply_chat_template(
            list(request.messages),
            add_generation_prompt=True,
            tokenize=True,
            context_window=engine.max_model_len,
            **(request.template_variables or {}),
        )
    )
    try:
        engine.add_request(prompt_ids, request.params, request.constraint, request_id=request_id)
    except runtime.RequestError as exc:
        if exc.field == "n":  # the runtime's `n` is what the caller asked for as `samples`
            raise runtime.RequestError(exc.reason, "samples") from exc
        raise


def _score(engine: Engine, messages: list[Mapping[str, str]], texts: list[str]) -> Scores:
    """Score each text, followed by the end of sequence, as the assistant's reply (on the submitting
    thread). Texts are tokenized canonically, as the tokenizer encodes them on their own, special-token
    strings read as text.

    Raises:
        runtime.PromptTooLongError, runtime.RequestError: see `Engine.score`.
    """
    prompt_ids = cast(
        list[int],
        engine.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, context_window=engine.max_model_len
        ),
    )
    eos = [] if engine.tokenizer.eos_token_id is None else [engine.tokenizer.eos_token_id]
    # Options are text: one that spells a special token must not become that control token.
    continuations = [engine.tokenizer.encode(text, parse_special_tokens=False) + eos for text in texts]
    logprobs = engine.score(prompt_ids, continuations)
    usage = Usage(prompt_tokens=len(prompt_ids), completion_tokens=sum(map(len, continuations)))
    return Scores(logprobs=tuple(logprobs), usage=usage)


class _Stepper:
    """What the backend's two threads share: the engine, the callers' handlers and the stop flag.

    One thread steps the engine; one submits requests, so they join the engine in call order, off
    the event loop. Neither holds the `LocalBackend`, so dropping the backend can stop them.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.handlers: dict[str, tuple[asyncio.AbstractEventLoop, _Deliver]] = {}
        self.handlers_lock = threading.Lock()
        self.is_closed = False
        self.submitter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stencil-submit")
        self._wakeup = threading.Event()
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()

    def wake(self) -> None:
        """A request arrived: start the stepping thread if needed and wake it."""
        with self._thread_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="stencil-engine", daemon=True)
                self._thread.start()
        self._wakeup.set()

    def _run(self) -> None:
        """The stepping loop: step while requests exist, sleep until the next one arrives."""
        while True:
            self._wakeup.clear()
            if self.is_closed:  # checked after the clear: a `stop` just before it is not lost
                return
            if not self.engine.has_unfinished_requests():
                self._wakeup.wait()
                continue
            try:
                updates = self.engine.step()
            except Exception as exc:  # any engine failure must reach every caller, not kill the thread
                self.fail_all(exc)
                continue
            if updates:
                self._deliver(updates)

    def _deliver(self, updates: list[RequestUpdate]) -> None:
        """Hand each update to its caller's event loop, one callback per loop."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Deliver, RequestUpdate]]] = {}
        with self.handlers_lock:
            for update in updates:
                handler = self.handlers.get(update.request_id)
                if handler is not None:
                    by_loop.setdefault(handler[0], []).append((handler[1], update))
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver_all, items)
            except RuntimeError:  # the caller's loop is closed: nobody waits for these requests
                for _, update in items:
                    self.engine.abort_request(update.request_id)

    def fail_all(self, exc: Exception) -> None:
        """Every live request gets `exc` and is aborted (an engine step failed, or a close)."""
        with self.handlers_lock:
            handlers = list(self.handlers.items())
        for request_id, (loop, deliver) in handlers:
            self.engine.abort_request(request_id)
            try:
                loop.call_soon_threadsafe(deliver, exc)
            except RuntimeError:
                continue

    def stop(self) -> None:
        """Make both threads exit, without waiting for them: it may run in a finalizer, on any thread."""
        self.is_closed = True
        self._wakeup.set()
        self.submitter.shutdown(wait=False)

    def join(self) -> None:
        """Wait for the stepping thread to end its step and exit (not from that thread itself)."""
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()


def _deliver_all(items: list[tuple[_Deliver, RequestUpdate]]) -> None:
    for deliver, update in items:
        deliver(update)
