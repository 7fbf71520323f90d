"""How the runtime sees a grammar constraint: two small protocols, no grammar internals.

`grammars.compile(...)` returns an object satisfying `Constraint`; its `matcher(vocab)` gives one
`TokenMatcher` per live sequence. The engine asks each matcher for the allowed-token mask before
sampling, advances it with the sampled token, and forks it when a sequence forks (parallel samples,
beams).

The hot path never raises: a matcher that cannot go on sets `error` and returns a mask allowing
nothing; the engine then ends that sequence with `finish_reason="error"` and attaches the error.

The fast paths (jump-forward, speculative decoding) use three token-level operations:
`forced_bytes`, `check_tokens` and `rollback`. A matcher written before them may lack them; the
engine's guard (`runtime.engine.guarded_matcher`) then forces nothing, checks drafts on a fork, and
cannot roll back (`can_roll_back`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Sequence

    import torch

    from grammars.errors import GrammarError


@runtime_checkable
class TokenMatcher(Protocol):
    """Per-sequence constraint state: which tokens may come next, and what has been accepted so far."""

    @property
    def error(self) -> GrammarError | None:
        """Sticky: set once the matcher cannot go on (a state budget, an internal failure); None otherwise."""
        ...

    def mask(self, max_seconds: float | None = None, max_remaining_tokens: int | None = None) -> torch.Tensor:
        """Bool [vocab.size]: True where the token is allowed now; EOS is allowed only when accepting.

        `max_seconds` bounds the wall time of computing it (None: no limit); past it the matcher sets
        `error` (a grammars.ConstraintLimitError) and returns a mask that allows nothing.
        `max_remaining_tokens` is how many tokens the sequence may still produce, this one included
        (None: unbounded); a matcher may use it to keep only tokens after which a complete text fits,
        and must return its plain mask when the budget is not tight."""
        ...

    def advance(self, token_id: int) -> None:
        """Consume `token_id`; raises grammars.TokenRejectedError when the mask forbids it."""
        ...

    def is_accepting(self) -> bool:
        """Whether the tokens consumed so far form a complete sentence of the constraint's language."""
        ...

    def fork(self) -> TokenMatcher:
        """An independent copy, so beams and parallel samples advance separately (it can roll back
        the tokens this one could)."""
        ...

    def forced_bytes(self) -> bytes:
        """The bytes every valid continuation starts with: empty when the next byte is open, when
        the text may end here, or once `error` is set. Jump-forward appends them without sampling."""
        ...

    def check_tokens(self, token_ids: Sequence[int]) -> int:
        """How many of `token_ids`, in order, `advance` would take from here (nothing after EOS),
        without moving: how far a speculative draft stays inside the constraint."""
        ...

    def rollback(self, num_tokens: int) -> None:
        """Undo the last `num_tokens` tokens advanced (rejected draft tokens); raises
        grammars.errors.RollbackError, leaving the matcher as it was, beyond what it remembers."""
        ...


@runtime_checkable
class Constraint(Protocol):
    """A compiled constraint: a factory of per-sequence matchers over a vocabulary."""

    def matcher(self, vocab: Any) -> TokenMatcher:
        """A fresh matcher at the start of the language, for tokens of `vocab` (a grammars.Vocabulary)."""
        ...
