"""Prometheus metrics of one server, in a registry of its own (two apps in one process do not clash).

Counters and histograms are written by the request handlers; the engine's gauges (KV blocks in use,
requests waiting in the scheduler) are read from the engine when `/metrics` is scraped.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from runtime.engine.llm_engine import Engine
from runtime.engine.outputs import Usage

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Metrics:
    """The server's metrics.

    Args:
        engine: the engine whose KV pool and queue the gauges read.
    """

    def __init__(self, engine: Engine) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "stencil_requests",
            "Requests answered, by endpoint and HTTP status.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.prompt_tokens = Counter("stencil_prompt_tokens", "Prompt tokens processed.", registry=self.registry)
        self.completion_tokens = Counter(
            "stencil_completion_tokens", "Completion tokens generated.", registry=self.registry
        )
        self.time_to_first_token = Histogram(
            "stencil_time_to_first_token_seconds",
            "Seconds from a request's arrival to its first token.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.latency = Histogram(
            "stencil_request_latency_seconds",
            "Seconds from a request's arrival to its last token.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.mask_seconds = Counter(
            "stencil_mask_seconds", "Seconds spent computing constraint masks.", registry=self.registry
        )
        self.running = Gauge("stencil_requests_running", "Requests admitted and not finished.", registry=self.registry)
        queue = Gauge("stencil_queue_depth", "Requests waiting in the engine's scheduler.", registry=self.registry)
        queue.set_function(lambda: len(engine.scheduler.waiting))
        blocks = Gauge("stencil_kv_blocks_in_use", "KV cache blocks in use.", registry=self.registry)
        blocks.set_function(lambda: engine.block_manager.num_used_blocks)
        total = Gauge("stencil_kv_blocks_total", "KV cache blocks in the pool.", registry=self.registry)
        total.set(engine.block_manager.num_blocks)

    def record_usage(self, usage: Usage) -> None:
        """Count a finished request's tokens."""
        self.prompt_tokens.inc(usage.prompt_tokens)
        self.completion_tokens.inc(usage.completion_tokens)

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)
