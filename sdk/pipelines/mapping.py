"""`LLM.map`: many prompts in flight at once, each one's value or error as it comes back.

    async for item in llm.map(prompts, output=Person):       # input order; ordered=False: completion order
        print(item.index, item.value if item.error is None else item.error)

Every call is started as its own task, up to `max_concurrency` at a time (None: all of them), so
the engine's scheduler batches them into the same forward passes (continuous batching: a finished
call's slot goes to the next prompt at once). A call that fails yields a `MapResult` carrying its
Stencil error, never ending the others (any other exception is a bug: it ends the iteration). Prompts are drawn from the iterable only as slots free up,
so a long generator of prompts is not read ahead of the work. Leaving the `async for` early
(or closing the iterator) cancels the calls still running, which frees their memory at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from grammars.errors import StencilError
from runtime.errors import RequestError
from sdk.prompts import PromptInput
from sdk.results import Result

__all__ = ["MapResult", "check_max_concurrency", "map_calls"]

T = TypeVar("T")


@dataclass(frozen=True)
class MapResult(Generic[T]):
    """The outcome of one prompt of `LLM.map`: its result, or the error that stopped it.

    Attributes:
        index: the prompt's position in the input (0-based).
        prompt: the prompt as given.
        result: the call's `Result` (None when it failed).
        error: the Stencil error the call raised (None when it succeeded), e.g. an
            `IncompleteOutputError` or a `RequestError` for a malformed prompt.
    """

    index: int
    prompt: PromptInput
    result: Result[T] | None
    error: StencilError | None

    @property
    def value(self) -> T:
        """The call's value.

        Raises:
            StencilError: the error the call failed with.
        """
        if self.result is None:
            assert self.error is not None  # exactly one of the two is set, by construction
            raise self.error
        return self.result.value


def check_max_concurrency(max_concurrency: int | None) -> None:
    """Raises RequestError (field "max_concurrency") unless it is None or a positive int."""
    if max_concurrency is not None and (
        isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1
    ):
        raise RequestError(f"must be None or an int >= 1, got {max_concurrency!r}", "max_concurrency")


async def map_calls(
    run: Callable[[PromptInput], Awaitable[Result[Any]]],
    prompts: Iterable[PromptInput],
    *,
    ordered: bool,
    max_concurrency: int | None,
) -> AsyncGenerator[MapResult[Any], None]:
    """Run `run` on every prompt concurrently and yield each outcome (see the module docstring).

    Args:
        run: one call (`LLM.run` with the output and options bound).
        prompts: the prompts, drawn as slots free up.
        ordered: yield in input order (a finished call waits for those before it); else as they finish.
        max_concurrency: most calls running at once; None: all.
    """
    numbered = enumerate(prompts)
    running: dict[int, asyncio.Task[None]] = {}
    # Each call puts its outcome here as it ends (the queue's order is the completion order), or
    # an exception that is not a Stencil error (a bug), which ends the iteration.
    finished: asyncio.Queue[MapResult[Any] | Exception] = asyncio.Queue()
    waiting: dict[int, MapResult[Any]] = {}  # ordered: outcomes waiting for those before them
    next_index = 0
    is_exhausted = False
    try:
        while True:
            while not is_exhausted and (max_concurrency is None or len(running) < max_concurrency):
                item = next(numbered, None)
                if item is None:
                    is_exhausted = True
                else:
                    running[item[0]] = asyncio.create_task(_outcome(run, *item, finished))
            if not running:
                return
            outcome = await finished.get()
            if isinstance(outcome, Exception):
                raise outcome
            del running[outcome.index]
            if not ordered:
                yield outcome
                continue
            waiting[outcome.index] = outcome
            while next_index in waiting:
                yield waiting.pop(next_index)
                next_index += 1
    finally:
        for task in running.values():
            task.cancel()
        await asyncio.gather(*running.values(), return_exceptions=True)


async def _outcome(
    run: Callable[[PromptInput], Awaitable[Result[Any]]],
    index: int,
    prompt: PromptInput,
    finished: asyncio.Queue[MapResult[Any] | Exception],
) -> None:
    try:
        outcome: MapResult[Any] | Exception = MapResult(index, prompt, await run(prompt), None)
    except StencilError as exc:
        outcome = MapResult(index, prompt, None, exc)
    except Exception as exc:  # handed to the iterating caller: a task's exception would be lost
        outcome = exc
    finished.put_nowait(outcome)
