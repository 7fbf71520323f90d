"""The one engine behind a server: admission, generation through the local backend, metrics.

Every endpoint generates through `Service.generate`, so requests from all clients join one engine
(`sdk.backends.LocalBackend`: one stepping thread, continuous batching) and are counted the same
way. Admission is a bound on requests in flight: past it a request is refused with a 429 and
`Retry-After` at once, rather than queued without limit behind the others.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import replace

from grammars.errors import StencilError
from runtime.engine.outputs import RequestOutput, RequestUpdate, Usage
from sdk.backends.base import BackendRequest
from sdk.backends.local import LocalBackend
from sdk.server.errors import APIError, from_stencil_error
from sdk.server.metrics import Metrics
from sdk.timing import MaskClock, TimedConstraint

__all__ = ["Service", "usage_body"]


class Service:
    """Generation for the server's handlers.

    Args:
        backend: the local backend over the served engine.
        served_model_name: the name clients use for the model (`/v1/models`, the `model` field).
        max_concurrent_requests: most requests in flight (waiting or running); more get a 429.
    """

    def __init__(self, backend: LocalBackend, *, served_model_name: str, max_concurrent_requests: int) -> None:
        self.backend = backend
        self.engine = backend.engine
        self.served_model_name = served_model_name
        self.max_concurrent_requests = max_concurrent_requests
        self.metrics = Metrics(backend.engine)
        self.num_in_flight = 0

    def check_model(self, model: str) -> None:
        """Raises a 404 `APIError` for a model this server does not serve."""
        if model != self.served_model_name:
            raise APIError(
                404,
                f"model: the model {model!r} does not exist; this server serves {self.served_model_name!r}",
                param="model",
                code="model_not_found",
            )

    async def generate(
        self, request: BackendRequest, *, arrived: float, constraint_param: str | None, prompt_param: str
    ) -> AsyncGenerator[RequestUpdate, None]:
        """The engine's updates for one request; closing the generator aborts the request at once.

        Args:
            request: what to generate.
            arrived: `time.perf_counter()` when the HTTP request arrived (latency and time to first token).
            constraint_param, prompt_param: the request fields errors name (see `from_stencil_error`).

        Raises:
            APIError: 429 when too many requests are in flight; 400 for a request the engine refuses
                (a prompt too long, a matcher that cannot be built); 503 when the engine is closed.
        """
        if self.num_in_flight >= self.max_concurrent_requests:
            raise APIError.overloaded(f"{self.num_in_flight} requests are in flight, the most this server takes")
        self.num_in_flight += 1
        self.metrics.running.inc()
        clock = MaskClock()
        if request.constraint is not None:
            request = replace(request, constraint=TimedConstraint(request.constraint, clock))
        has_first_token = False
        try:
            async with aclosing(self.backend.stream(request)) as updates:
                async for update in updates:
                    if not has_first_token and any(delta.token_ids for delta in update.deltas):
                        has_first_token = True
                        self.metrics.time_to_first_token.observe(time.perf_counter() - arrived)
                    if update.output is not None:
                        self._finished(update.output, arrived, has_first_token)
                    yield update
        except StencilError as exc:
            raise from_stencil_error(exc, constraint_param=constraint_param, prompt_param=prompt_param) from exc
        finally:
            self.num_in_flight -= 1
            self.metrics.running.dec()
            self.metrics.mask_seconds.inc(clock.seconds)

    def _finished(self, output: RequestOutput, arrived: float, has_first_token: bool) -> None:
        elapsed = time.perf_counter() - arrived
        if not has_first_token and output.usage.completion_tokens:  # beams report only at the end
            self.metrics.time_to_first_token.observe(elapsed)
        self.metrics.latency.observe(elapsed)
        self.metrics.record_usage(output.usage)

    async def collect(
        self, request: BackendRequest, *, arrived: float, constraint_param: str | None, prompt_param: str
    ) -> RequestOutput:
        """The finished output of one request (see `generate`)."""
        output = None
        async with aclosing(
            self.generate(request, arrived=arrived, constraint_param=constraint_param, prompt_param=prompt_param)
        ) as updates:
            async for update in updates:
                output = update.output
        if output is None:
            raise RuntimeError("the backend ended without a result")
        return output


def usage_body(usage: Usage) -> dict[str, int]:
    """OpenAI's `usage` object."""
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
