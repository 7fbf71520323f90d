"""The engine's wrapper around a constraint's matcher: one failing constraint fails one sequence.

A matcher is third-party code from the engine's point of view (grammars, the SDK's wrappers, a user's
own constraint), and an exception escaping it mid-step would fail every request in the batch. The
guard turns any non-Stencil exception of `matcher()`, `mask()`, `advance()`, `is_accepting()` or
`fork()` into a sticky `MatcherFailedError` (the original is its `__cause__`), so the engine ends that
sequence alone with `finish_reason="error"`.

It also keeps the mask of the current position (and the budget it was computed for): the engine
computes masks before it takes its lock (a slow mask must not block `add_request` /
`abort_request`), and asks again, for free, under it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from grammars.errors import GrammarError, MatcherFailedError, StencilError

if TYPE_CHECKING:
    from runtime.engine.constraints import Constraint, TokenMatcher


def guarded_matcher(constraint: Constraint, vocab: Any, max_mask_seconds: float | None) -> GuardedMatcher:
    """`constraint.matcher(vocab)`, guarded, each of its masks computed within `max_mask_seconds`.

    Raises:
        GrammarError: the constraint cannot build a matcher (its own Stencil error, or a
            `MatcherFailedError` wrapping any other exception).
    """
    try:
        return GuardedMatcher(constraint.matcher(vocab), max_mask_seconds)
    except StencilError:
        raise
    except Exception as exc:  # RecursionError and MemoryError included: a bad constraint, not a bad engine
        raise MatcherFailedError("matcher", exc) from exc


class GuardedMatcher:
    """A `TokenMatcher` that never raises anything but `GrammarError`, and caches its current mask.

    Args:
        matcher: the constraint's matcher.
        max_mask_seconds: wall-clock budget of each mask (None: no limit).
    """

    def __init__(self, matcher: TokenMatcher, max_mask_seconds: float | None) -> None:
        self._matcher = matcher
        self._max_mask_seconds = max_mask_seconds
        self._failure: GrammarError | None = None
        self._mask: torch.Tensor | None = None
        self._mask_budget: int | None = None

    @property
    def error(self) -> GrammarError | None:
        """The matcher's own sticky error, or the failure the guard caught."""
        return self._failure if self._failure is not None else self._matcher.error

    @error.setter
    def error(self, error: GrammarError | None) -> None:
        self._failure = error

    def mask(self, max_seconds: float | None = None, max_remaining_tokens: int | None = None) -> torch.Tensor:
        """The matcher's mask at the current position for `max_remaining_tokens` (computed once per
        position and budget, within the guard's time budget or `max_seconds` if given); an empty
        mask, which allows nothing, once `error` is set."""
        if self._mask_budget != max_remaining_tokens:
            self._mask = None
        if self._mask is None and self.error is None:
            try:
                self._mask = self._matcher.mask(
                    self._max_mask_seconds if max_seconds is None else max_seconds, max_remaining_tokens
                )
                self._mask_budget = max_remaining_tokens
            except Exception as exc:
                self._fail("mask", exc)
        if self._mask is None or self.error is not None:
            return torch.zeros(0, dtype=torch.bool)
        return self._mask

    def advance(self, token_id: int) -> None:
        """Consume `token_id`.

        Raises:
            GrammarError: the matcher rejected the token (its own error) or failed (`MatcherFailedError`).
        """
        self._mask = None
        if self._failure is not None:
            raise self._failure
        try:
            self._matcher.advance(token_id)
        except GrammarError:
            raise
        except Exception as exc:
            raise self._fail("advance", exc) from exc

    def is_accepting(self) -> bool:
        """Whether the text so far is a complete sentence (False once the matcher has failed)."""
        if self._failure is not None:
            return False
        try:
            return self._matcher.is_accepting()
        except Exception as exc:
            self._fail("is_accepting", exc)
            return False

    def fork(self) -> GuardedMatcher:
        """An independent copy at the same position, sharing the cached mask; a copy that has failed
        when forking fails (that sequence ends at its next step, not the step that forked it)."""
        twin = GuardedMatcher.__new__(GuardedMatcher)
        twin._failure, twin._mask, twin._max_mask_seconds = self._failure, self._mask, self._max_mask_seconds
        twin._mask_budget = self._mask_budget
        try:
            twin._matcher = self._matcher.fork()
        except Exception as exc:
            twin._matcher = self._matcher
            twin._fail("fork", exc)
        return twin

    def _fail(self, operation: str, exc: Exception) -> GrammarError:
        """Keep `exc` as the sticky error: as is when it is a GrammarError the matcher raised instead
        of setting `error`, else wrapped."""
        if isinstance(exc, GrammarError):
            failure = exc
        else:
            failure = MatcherFailedError(operation, exc)
            failure.__cause__ = exc
        self._failure = failure
        return failure
