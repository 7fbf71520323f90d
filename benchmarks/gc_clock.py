"""The cyclic garbage collector's pauses, timed as they happen (for the benchmarks that report them)."""

from __future__ import annotations

import gc
from collections.abc import Callable


class GcClock:
    """Sums the time the cyclic collector runs (its pauses land inside whatever was being timed), on
    `clock`, and counts its full (generation 2) collections, whose pause grows with the heap."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.seconds = 0.0
        self.longest = 0.0
        self.full_collections = 0
        self.full_seconds = 0.0
        self.longest_full = 0.0
        self._start = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start = self.clock()
            return
        pause = self.clock() - self._start
        self.seconds += pause
        self.longest = max(self.longest, pause)
        if info["generation"] == 2:
            self.full_collections += 1
            self.full_seconds += pause
            self.longest_full = max(self.longest_full, pause)
