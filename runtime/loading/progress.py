"""A plain-text progress bar on stderr for model loads, shown only when a load is slow.

Most loads are quick (the in-process cache makes repeats instant), and a bar that flashes for a
quarter second is noise, so nothing is drawn until `SHOW_AFTER_S` has passed; nothing is drawn when
stderr is not a terminal either (logs and captured output would fill with carriage returns).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Mapping
from typing import TextIO

import torch

from runtime.loading import checkpoint

__all__ = ["LoadProgress", "ReadProgress"]

#: Seconds a load must run before the bar appears.
SHOW_AFTER_S = 1.0
#: Seconds between redraws, so a load of many small tensors does not spend its time printing.
_REDRAW_EVERY_S = 0.1
_BAR_WIDTH = 30


class LoadProgress:
    """Counts finished steps of one load and redraws a one-line bar: `label [#####.....]  42% (114/272)`.

    The clock starts at construction, so slow work before the first step (parsing a file's header)
    counts towards `SHOW_AFTER_S`.

    Args:
        label: what is loading, e.g. the file name.
        num_steps: steps known so far; `add_steps` adds more once they are known.
        stream: where to draw; stderr by default.
        is_forced: draw even when `stream` is not a terminal (tests).
    """

    def __init__(
        self, label: str, num_steps: int = 0, *, stream: TextIO | None = None, is_forced: bool = False
    ) -> None:
        self.label = label
        self.num_steps = num_steps
        self.num_done = 0
        self._stream = stream if stream is not None else sys.stderr
        self._is_enabled = is_forced or self._stream.isatty()
        self._started_at = time.monotonic()
        self._drawn_at: float | None = None

    def add_steps(self, num_steps: int) -> None:
        """Announce `num_steps` more steps (e.g. once the tensor count is read)."""
        self.num_steps += num_steps

    def advance(self, num_steps: int = 1) -> None:
        """Mark `num_steps` more steps done and redraw if the load has been slow."""
        self.num_done = min(self.num_done + num_steps, self.num_steps)
        now = time.monotonic()
        if not self._is_enabled or now - self._started_at < SHOW_AFTER_S:
            return
        if self._drawn_at is None or now - self._drawn_at >= _REDRAW_EVERY_S:
            self._draw(now)

    def close(self) -> None:
        """Draw the final state and end the line, if a bar was shown."""
        if self._drawn_at is not None:
            self._draw(time.monotonic())
            self._stream.write("\n")
            self._stream.flush()

    def _draw(self, now: float) -> None:
        num_steps = max(self.num_steps, 1)
        filled = _BAR_WIDTH * self.num_done // num_steps
        percent = 100 * self.num_done // num_steps
        bar = "#" * filled + "." * (_BAR_WIDTH - filled)
        elapsed = now - self._started_at
        self._stream.write(f"\r{self.label} [{bar}] {percent:3d}% ({self.num_done}/{num_steps}) {elapsed:.1f}s")
        self._stream.flush()
        self._drawn_at = now


class ReadProgress(Mapping[str, torch.Tensor]):
    """`weights` behind a `LoadProgress` that advances with each read: a GGUF file's tensors are dequantized as
    the model reads them, which is most of a large model's load.

    Args:
        weights: the mapping read through; its `read_as(name, dtype)`, where it has one, serves `read_as`.
        label: what is loading.
    """

    def __init__(self, weights: Mapping[str, torch.Tensor], label: str) -> None:
        self._weights = weights
        self.progress = LoadProgress(label, num_steps=len(weights))

    def __getitem__(self, name: str) -> torch.Tensor:
        value = self._weights[name]
        self.progress.advance()
        return value

    def read_as(self, name: str, dtype: torch.dtype) -> torch.Tensor:
        """`self[name]` cast to `dtype`."""
        value = checkpoint.read_as(self._weights, name, dtype)
        self.progress.advance()
        return value

    def __contains__(self, name: object) -> bool:
        return name in self._weights

    def __iter__(self) -> Iterator[str]:
        return iter(self._weights)

    def __len__(self) -> int:
        return len(self._weights)
