"""The time budget of one compile (or one matching step), checked inside the core's long loops.

Stacked lookaheads, intersections of many patterns or very ambiguous grammars can make a single
emptiness search, lexer row or parser expansion take seconds, so one check at the end of a compile
is not enough: a `Budget` travels with the work and its `check` is called from every loop that can
run long (normalizing, building the parser, expanding stacks, emptiness searches, lexer rows). The
deep loops take the bare `check` callable, so any deadline with a `check()` method (the mask
path's, say) plugs in the same way.

Size budgets belong to the tables they bound: `lexer.MAX_STATES` per lexer generation,
`parser.MAX_FRAMES` per parser, `byte_regex.MAX_INTERNED_TERMS` for the term tables.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from grammars.errors import ConstraintLimitError

#: Seconds the core may spend turning one grammar into an automaton.
MAX_COMPILE_SECONDS = 10.0

#: What deep loops call to give a budget the chance to stop them (raises ConstraintLimitError).
Check = Callable[[], None]


class Budget:
    """A wall-clock deadline for one piece of work.

    Args:
        max_seconds: seconds from now; None never expires.
        what: the work, for the error message (e.g. "compiling the grammar").
    """

    def __init__(self, max_seconds: float | None = MAX_COMPILE_SECONDS, *, what: str = "compiling the grammar") -> None:
        self.max_seconds = max_seconds
        self.what = what
        self._expires_at = None if max_seconds is None else time.monotonic() + max_seconds

    def check(self) -> None:
        """Raise once the deadline has passed.

        Raises:
            ConstraintLimitError: the work took longer than `max_seconds`.
        """
        if self._expires_at is not None and time.monotonic() > self._expires_at:
            raise ConstraintLimitError(f"{self.what} exceeded its time budget of {self.max_seconds:g} s")


def no_check() -> None:
    """The check of work without a deadline."""
