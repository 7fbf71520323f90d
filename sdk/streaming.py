"""Streaming: partial typed objects as the JSON of the answer grows, then the final object.

`PartialJSON` follows the answer text character by character (depth, inside a string or not) and
notes where the last complete top-level element ends: a `,` or the closing bracket of the
top-level object or array. Only when a delta completes an element is the text parsed: the prefix up
to that point, closed with the matching bracket, is valid JSON holding exactly the complete fields
or items. `partial_value` turns it into the output type: a Pydantic model with its complete fields
validated one by one (`model_construct`, the others None and absent from `model_fields_set`), a list
of validated items, or the JSON container itself for schema outputs. Text outputs stream their text.

`Stream` is what `LLM.stream` returns: an async iterable of those values whose `result` holds the
final `Result` (value, usage, timings) once iteration ends. Each `async for` over it gets an
iterator that closes the generation when the loop lets go of it, so a `break` frees the engine at
once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import typing
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator
from typing import Any, Generic, TypeVar

import pydantic
import typing_extensions
from pydantic import TypeAdapter

from sdk.outputs import OutputKind, OutputSpec
from sdk.results import Result

__all__ = ["PartialJSON", "Stream", "partial_value"]

T = TypeVar("T")

_CLOSER = {"{": "}", "[": "]"}


class PartialJSON:
    """The answer's JSON text so far, and where its last complete top-level element ends."""

    def __init__(self) -> None:
        self.text = ""
        self.container: str | None = None
        self._depth = 0
        self._in_string = False
        self._is_escaped = False
        self._complete_end: int | None = None
        self.is_closed = False

    def feed(self, delta: str) -> bool:
        """Append a delta; return whether a top-level element (or the whole value) completed in it."""
        start = len(self.text)
        self.text += delta
        completed = False
        for offset, char in enumerate(delta, start):
            if self._in_string:
                if self._is_escaped:
                    self._is_escaped = False
                elif char == "\\":
                    self._is_escaped = True
                elif char == '"':
                    self._in_string = False
            elif char == '"':
                self._in_string = True
            elif char in "{[":
                if self._depth == 0 and self.container is None:
                    self.container = char
                self._depth += 1
            elif char in "}]":
                self._depth -= 1
                if self._depth == 0:
                    self._complete_end, self.is_closed, completed = offset, True, True
            elif char == "," and self._depth == 1:
                self._complete_end, completed = offset, True
        return completed

    def complete_prefix(self) -> Any:
        """The parsed JSON of the complete top-level elements (None before the first one)."""
        if self._complete_end is None or self.container is None:
            return None
        closed = self.text[: self._complete_end].rstrip() + _CLOSER[self.container]
        try:
            return json.loads(closed[closed.index(self.container) :])
        except ValueError:
            return None


def partial_value(spec: OutputSpec, prefix: Any) -> Any:
    """The output-typed view of the complete elements of a partial JSON value.

    Args:
        spec: the output being streamed.
        prefix: what `PartialJSON.complete_prefix` parsed (a dict or a list).

    Returns:
        A partially filled model, the valid entries of a dict or TypedDict, a list of validated items,
        the JSON container itself, or None when the output has no partial form (a number, a
        Literal, a dataclass, ...).
    """
    output = spec.output
    if spec.kind is OutputKind.TYPE and isinstance(output, type) and issubclass(output, pydantic.BaseModel):
        return _partial_model(output, prefix) if isinstance(prefix, dict) else None
    if spec.kind is OutputKind.TYPE and isinstance(prefix, dict):
        return _partial_mapping(output, prefix)
    if spec.kind is OutputKind.TYPE:
        item_adapter = _item_adapter(output)
        if item_adapter is None or not isinstance(prefix, list):
            return None
        return [item for item in (_validated(item_adapter, raw) for raw in prefix) if item is not _INVALID]
    return prefix


def _partial_model(model: type[pydantic.BaseModel], data: dict[str, Any]) -> pydantic.BaseModel:
    values: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        key = (
            info.validation_alias if isinstance(info.validation_alias, str) else info.alias or name
        )  # the schema's key
        if key in data:
            value = _validated(_field_adapter(model, name), data[key])
            if value is not _INVALID:
                values[name] = value
    missing = {name: None for name, info in model.model_fields.items() if name not in values and info.is_required()}
    return model.model_construct(_fields_set=set(values), **values, **missing)


_INVALID = object()
_adapters: dict[tuple[object, str], TypeAdapter[Any]] = {}


def _field_adapter(model: type[pydantic.BaseModel], name: str) -> TypeAdapter[Any]:
    adapter = _adapters.get((model, name))
    if adapter is None:
        # The field's type with its constraints (`Annotated[type, *metadata]`).
        annotation = model.model_fields[name].rebuild_annotation()
        adapter = _adapters[(model, name)] = TypeAdapter(annotation)
    return adapter


def _partial_mapping(output: Any, data: dict[str, Any]) -> dict[str, Any] | None:
    """The valid entries so far of a `dict[str, T]` or TypedDict output (None for other objects)."""
    if typing.get_origin(output) is dict and len(typing.get_args(output)) == 2:
        adapter = _adapters.get((output, "{}"))
        if adapter is None:
            adapter = _adapters[(output, "{}")] = TypeAdapter(typing.get_args(output)[1])
        adapters = {key: adapter for key in data}
    elif typing_extensions.is_typeddict(output):  # also typing_extensions' TypedDict, which Pydantic asks for
        hints = typing.get_type_hints(output, include_extras=True)
        adapters = {key: _typed_dict_adapter(output, key, hints[key]) for key in data if key in hints}
    else:
        return None
    entries = {key: _validated(adapter, data[key]) for key, adapter in adapters.items()}
    return {key: value for key, value in entries.items() if value is not _INVALID}


def _typed_dict_adapter(output: Any, key: str, annotation: Any) -> TypeAdapter[Any]:
    adapter = _adapters.get((output, key))
    if adapter is None:
        adapter = _adapters[(output, key)] = TypeAdapter(annotation)
    return adapter


def _item_adapter(output: Any) -> TypeAdapter[Any] | None:
    """The validator of one item of a list, set or homogeneous tuple output, else None."""
    if typing.get_origin(output) not in (list, set, frozenset, tuple):
        return None
    args = typing.get_args(output)
    if not args or (typing.get_origin(output) is tuple and (len(args) != 2 or args[1] is not Ellipsis)):
        return None
    adapter = _adapters.get((output, "[]"))
    if adapter is None:
        adapter = _adapters[(output, "[]")] = TypeAdapter(args[0])
    return adapter


def _validated(adapter: TypeAdapter[Any], raw: Any) -> Any:
    # A field that fails alone is left out of the partial; the final validation reports it.
    try:
        return adapter.validate_python(raw)
    except pydantic.ValidationError:
        return _INVALID


class Stream(Generic[T]):
    """Partial values of a streamed call; `result` once the iteration has ended.

    Iterate it once (`async for partial in stream`); the last value yielded is the final, fully
    validated object. Leaving the loop early (`break`, an exception in its body), `aclose()` or the
    end of an `async with stream:` block aborts the generation and frees its memory at once.

    Args:
        start: called once with the setter of `result`; returns the generator of partial values.

    Raises (while iterating):
        The `GenerationError`s of `LLM.run`, and the backend's request errors.
    """

    def __init__(self, start: Callable[[Callable[[Result[T]], None]], AsyncGenerator[T, None]]) -> None:
        #: The final `Result`, set when the iteration has ended normally.
        self.result: Result[T] | None = None
        self._partials = start(self._set_result)

    def _set_result(self, result: Result[T]) -> None:
        self.result = result

    def __aiter__(self) -> AsyncIterator[T]:
        return _Iteration(self._partials)

    async def aclose(self) -> None:
        """Stop the generation now (no effect after the end)."""
        await self._partials.aclose()

    async def __aenter__(self) -> Stream[T]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class _Iteration(AsyncIterator[T]):
    """One `async for` over a `Stream`. A loop left early drops its iterator without a word (Python
    has no hook for it), so the generation is closed when this iterator is freed: at once, since
    the loop held the only reference, instead of when the garbage collector finds the generator."""

    def __init__(self, partials: AsyncGenerator[T, None]) -> None:
        self._partials = partials
        self._closer: weakref.finalize | None = None

    async def __anext__(self) -> T:
        if self._closer is None:
            self._closer = weakref.finalize(self, _close_abandoned, self._partials, asyncio.get_running_loop())
            self._closer.atexit = False  # at exit the loops are gone, and their generators with them
        return await self._partials.__anext__()


def _close_abandoned(partials: AsyncGenerator[Any, None], loop: asyncio.AbstractEventLoop) -> None:
    """Close the generator of an iteration that was let go of (a `weakref.finalize` callback).

    On the loop's thread its cleanup runs here, up to its first real wait: the backend has aborted
    the request and freed its memory when this returns. From another thread (the sync facade's
    caller, the garbage collector), the close is handed to the loop.
    """
    try:
        is_on_loop = asyncio.get_running_loop() is loop
    except RuntimeError:
        is_on_loop = False
    if not is_on_loop:
        with contextlib.suppress(RuntimeError):  # a closed loop: its generators cannot run any more
            loop.call_soon_threadsafe(_close_abandoned, partials, loop)
        return
    closing = partials.aclose().__await__()
    try:
        awaited = closing.send(None)
    except StopIteration:
        return
    # The cleanup waits for something (a remote backend closing its connection): the loop finishes it.
    task = loop.create_task(_finish_closing(closing, awaited))
    _closing_tasks.add(task)  # the loop keeps only a weak reference to its tasks
    task.add_done_callback(_closing_tasks.discard)


_closing_tasks: set[asyncio.Task[None]] = set()


async def _finish_closing(closing: Generator[Any, None, None], awaited: Any) -> None:
    """Drive a close that `_close_abandoned` started by hand from where it waits: wait for what it
    waits for (a future, or the loop's next turn for a bare yield), then resume it."""
    while True:
        if isinstance(awaited, asyncio.Future):
            await asyncio.wait([awaited])
        else:
            await asyncio.sleep(0)
        try:
            awaited = closing.send(None)
        except StopIteration:
            return
