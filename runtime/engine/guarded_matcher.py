"""The engine's wrapper around a constraint's matcher: one failing constraint fails one sequence.

A matcher is third-party code from the engine's point of view (grammars, the SDK's wrappers, a user's
own constraint), and an exception escaping it mid-step would fail every request in the batch. The
guard turns any non-Stencil exception of `matcher()`, `mask()`, `advance()`, `is_accepting()` or
`fork()` into a sticky `MatcherFailedError` (the original is its `__cause__`), so the engine ends that
sequence alone with `finish_reason="error"`.

The fast-path operations (`forced_bytes`, `check_tokens`, `rollback`) are guarded the same way, and
stand in for a matcher that lacks them: nothing is forced, drafts are checked on a fork, and
`can_roll_back` says whether `rollback` works.

It also keeps the mask of the current position (and the budget it was computed for, and whether
it is the closing mask of the runaway guard): the engine computes masks before it takes its lock (a
slow mask must not block `add_request` / `abort_request`), and asks again, for free, under it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from grammars.errors import GrammarError, MatcherFailedError, RollbackError, StencilError

if TYPE_CHECKING:
    from collections.abc import Sequence

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
        #: What `_mask` was computed for: (max_remaining_tokens, whether it is the closing mask).
        self._mask_key: tuple[int | None, bool] | None = None

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
        return self._cached_mask(max_seconds, (max_remaining_tokens, False))

    def closing_mask(self, max_seconds: float | None = None, max_remaining_tokens: int | None = None) -> torch.Tensor:
        """`mask`, restricted to the tokens that bring the text closer to an end: the matcher's own
        `closing_mask` (see runtime.engine.runaway), or its plain mask when it has none."""
        return self._cached_mask(max_seconds, (max_remaining_tokens, True))

    def _cached_mask(self, max_seconds: float | None, key: tuple[int | None, bool]) -> torch.Tensor:
        if self._mask_key != key:
            self._mask = None
        if self._mask is None and self.error is None:
            compute = self._matcher.mask
            if key[1]:
                compute = getattr(self._matcher, "closing_mask", compute)
            try:
                self._mask = compute(self._max_mask_seconds if max_seconds is None else max_seconds, key[0])
                self._mask_key = key
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

    def forced_bytes(self) -> bytes:
        """The matcher's forced bytes (see `TokenMatcher.forced_bytes`); empty once `error` is set,
        and for a matcher without `forced_bytes` (forcing nothing is always exact)."""
        own = getattr(self._matcher, "forced_bytes", None)
        if own is None or self.error is not None:
            return b""
        try:
            forced: bytes = own()
        except Exception as exc:
            self._fail("forced_bytes", exc)
            return b""
        return forced

    def check_tokens(self, token_ids: Sequence[int]) -> int:
        """How many of `token_ids`, in order, the matcher takes from here, without moving (0 once
        `error` is set); on a fork, advanced token by token, for a matcher without `check_tokens`."""
        if self.error is not None:
            return 0
        try:
            own = getattr(self._matcher, "check_tokens", None)
            if own is not None:
                count: int = own(token_ids)
                return count
            twin = self._matcher.fork()
            for count, token_id in enumerate(token_ids):
                try:
                    twin.advance(token_id)
                except GrammarError:
                    return count
            return len(token_ids)
        except Exception as exc:
            self._fail("check_tokens", exc)
            return 0

    @property
    def can_roll_back(self) -> bool:
        """Whether the matcher has `rollback` (every Stencil matcher does; older ones may not)."""
        return hasattr(self._matcher, "rollback")

    def rollback(self, num_tokens: int) -> None:
        """Undo the last `num_tokens` tokens advanced.

        Raises:
            GrammarError: the sticky failure of the guard; `RollbackError` (not sticky: the matcher
                is as it was) beyond what the matcher remembers, or when it cannot roll back; a
                `MatcherFailedError` when it failed doing so.
        """
        if self._failure is not None:
            raise self._failure
        if not self.can_roll_back:
            raise RollbackError(f"this constraint's matcher ({type(self._matcher).__name__}) cannot roll back")
        self._mask = None
        try:
            self._matcher.rollback(num_tokens)
        except GrammarError:
            raise
        except Exception as exc:
            raise self._fail("rollback", exc) from exc

    def fork(self) -> GuardedMatcher:
        """An independent copy at the same position, sharing the cached mask; a copy that has failed
        when forking fails (that sequence ends at its next step, not the step that forked it)."""
        twin = GuardedMatcher.__new__(GuardedMatcher)
        twin._failure, twin._mask, twin._max_mask_seconds = self._failure, self._mask, self._max_mask_seconds
        twin._mask_key = self._mask_key
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
