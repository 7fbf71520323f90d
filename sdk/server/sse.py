"""Server-sent events, and cancelling a request's work the moment its client goes away.

A client that disconnects must free its sequences and KV blocks at once, not when the next token
fails to send (which, for a request stuck behind others, may be much later). Both the streaming
response and the non-streaming wait listen for the ASGI `http.disconnect` message and cancel the
generation when it comes; cancelling closes the backend's stream, which aborts the engine request.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Awaitable
from contextlib import aclosing
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

__all__ = ["DONE", "ClientDisconnected", "SSEResponse", "cancel_on_disconnect", "sse_event", "started"]

#: The last event of every OpenAI stream.
DONE = "data: [DONE]\n\n"

T = TypeVar("T")


class ClientDisconnected(Exception):
    """The client went away before its answer was ready; the generation was cancelled."""


def sse_event(data: dict[str, Any]) -> str:
    """One `data:` event holding a JSON object."""
    return f"data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


class SSEResponse(StreamingResponse):
    """A `text/event-stream` response whose generator is closed as soon as the client disconnects.

    Args:
        events: the events, already encoded; closed (aborting the generation) on disconnect.
    """

    def __init__(self, events: AsyncGenerator[str, None]) -> None:
        super().__init__(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self._events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with aclosing(self._events):
            sending = asyncio.ensure_future(self.stream_response(send))
            disconnected = asyncio.ensure_future(_wait_for_disconnect(receive))
            try:
                await asyncio.wait((sending, disconnected), return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (sending, disconnected):
                    task.cancel()
                await asyncio.gather(sending, disconnected, return_exceptions=True)
            if sending.done() and not sending.cancelled() and sending.exception() is not None:
                raise sending.exception()  # type: ignore[misc]


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it if the client disconnects first.

    Raises:
        ClientDisconnected: the client went away first (nobody is left to answer).
    """
    working = asyncio.ensure_future(work)
    disconnected = asyncio.ensure_future(_wait_for_disconnect(request.receive))
    try:
        await asyncio.wait((working, disconnected), return_when=asyncio.FIRST_COMPLETED)
    finally:
        disconnected.cancel()
        if not working.done():
            working.cancel()
            await asyncio.gather(working, return_exceptions=True)
    if working.cancelled():
        raise ClientDisconnected("the client disconnected before the answer was ready")
    return working.result()


async def started(items: AsyncGenerator[T, None]) -> AsyncGenerator[T, None]:
    """Take the first item now, then give it back with the rest.

    A stream's refusals (a prompt too long, a full server) come before its first update; taking it
    before the response starts turns them into HTTP errors instead of a 200 that breaks off.

    Raises:
        Whatever `items` raises before its first item; `items` is closed then.
    """
    try:
        first = await anext(items)
    except BaseException:
        await items.aclose()
        raise
    return _prepended(first, items)


async def _prepended(first: T, rest: AsyncGenerator[T, None]) -> AsyncGenerator[T, None]:
    async with aclosing(rest):
        yield first
        async for item in rest:
            yield item


async def _wait_for_disconnect(receive: Receive) -> None:
    """Return when the ASGI server reports the client gone (the body has been read already)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
