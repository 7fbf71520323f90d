"""Time spent in the constraint matcher, measured per call without touching the engine.

The engine asks each sequence's matcher for a mask and advances it with the sampled token; wrapping
the call's constraint so its matchers time those two methods gives the call's `mask_time`. The clock
adds two `perf_counter` reads per matcher call, well under a microsecond, next to masks that cost
microseconds (cached) to milliseconds (new states).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from runtime.engine.constraints import Constraint, TokenMatcher
from runtime.engine.runaway import closing_mask

if TYPE_CHECKING:
    from collections.abc import Sequence

    import torch

    from grammars.errors import GrammarError

__all__ = ["MaskClock", "TimedConstraint"]


class MaskClock:
    """Seconds spent in the matchers of one call. Written by the engine thread only; read after
    the call ends."""

    def __init__(self) -> None:
        self.seconds = 0.0


class TimedConstraint:
    """A constraint whose matchers add the time of their work (`mask()`, `advance()` and the
    fast paths' token operations) to a clock.

    Args:
        constraint: the constraint to enforce.
        clock: where the time goes (shared by every matcher and fork of this call).
    """

    def __init__(self, constraint: Constraint, clock: MaskClock) -> None:
        self.constraint = constraint
        self.clock = clock

    def matcher(self, vocab: Any) -> TokenMatcher:
        """A timed matcher over `vocab` (see runtime.engine.constraints.Constraint)."""
        start = time.perf_counter()
        inner = self.constraint.matcher(vocab)
        self.clock.seconds += time.perf_counter() - start
        return _TimedMatcher(inner, self.clock)


class _TimedMatcher:
    """A runtime.engine.constraints.TokenMatcher that times its inner matcher's work."""

    __slots__ = ("_inner", "_clock")

    def __init__(self, inner: TokenMatcher, clock: MaskClock) -> None:
        self._inner = inner
        self._clock = clock

    @property
    def error(self) -> GrammarError | None:
        return self._inner.error

    def mask(self, max_seconds: float | None = None, max_remaining_tokens: int | None = None) -> torch.Tensor:
        start = time.perf_counter()
        mask = self._inner.mask(max_seconds, max_remaining_tokens)
        self._clock.seconds += time.perf_counter() - start
        return mask

    def closing_mask(self, max_seconds: float | None = None, max_remaining_tokens: int | None = None) -> torch.Tensor:
        """The inner matcher's closing mask (see runtime.engine.runaway), timed."""
        start = time.perf_counter()
        mask = closing_mask(self._inner, max_remaining_tokens, max_seconds)
        self._clock.seconds += time.perf_counter() - start
        return mask

    def advance(self, token_id: int) -> None:
        start = time.perf_counter()
        try:
            self._inner.advance(token_id)
        finally:
            self._clock.seconds += time.perf_counter() - start

    def is_accepting(self) -> bool:
        return self._inner.is_accepting()

    def forced_bytes(self) -> bytes:
        start = time.perf_counter()
        try:
            return self._inner.forced_bytes()
        finally:
            self._clock.seconds += time.perf_counter() - start

    def check_tokens(self, token_ids: Sequence[int]) -> int:
        start = time.perf_counter()
        try:
            return self._inner.check_tokens(token_ids)
        finally:
            self._clock.seconds += time.perf_counter() - start

    def rollback(self, num_tokens: int) -> None:
        start = time.perf_counter()
        try:
            self._inner.rollback(num_tokens)
        finally:
            self._clock.seconds += time.perf_counter() - start

    def fork(self) -> _TimedMatcher:
        return _TimedMatcher(self._inner.fork(), self._clock)
