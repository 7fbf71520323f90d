"""The per-sequence matcher: where one generation stands in a constraint, token by token."""

from __future__ import annotations

from grammars.core.automaton import State
from grammars.core.budget import Budget
from grammars.errors import GrammarError, TokenRejectedError
from grammars.masking.masks import MaskTable


class Matcher:
    """Tracks one sequence through a compiled constraint: the mask of allowed next tokens, and
    advancing by a sampled token.

    The hot path does not raise: `mask()` on a state the engine cannot handle (a size budget, or its
    time budget, exceeded) sets `error` and allows nothing; the runtime turns that into an error at
    the request boundary.
    Create matchers with `Constraint.matcher(vocab)`.
    """

    def __init__(self, table: MaskTable) -> None:
        self._table = table
        self._state: State = table.automaton.initial
        self._finished = False
        self.error: GrammarError | None = None

    def mask(self, max_seconds: float | None = None, max_remaining_tokens: int | None = None):
        """bool torch tensor [vocab.size]: True where the token may come next. Shared: do not modify.

        Args:
            max_seconds: wall-clock budget for computing it (a new state's mask walks the vocabulary;
                some grammars make that slow); None: no limit. Past it, `error` becomes a
                `ConstraintLimitError` and the mask allows nothing; lexer rows computed so far stay
                cached.
            max_remaining_tokens: tokens the generation may still produce, this one and the
                end-of-sequence token included (None: unbounded). When it is tight, the mask keeps
                only the tokens after which a complete text still fits
                (`MaskTable.budget_allowed`); when no token would be dropped, or none fits, the
                mask is the plain one.
        """
        if self._finished or self.error is not None:
            return self._nothing()
        check = Budget(max_seconds, what="computing a token mask").check
        try:
            if max_remaining_tokens is not None:
                fits = self._table.budget_allowed(self._state, max_remaining_tokens, check)
                if fits is not None:
                    import torch

                    return torch.from_numpy(fits)
            return self._table.mask(self._state, check)
        except GrammarError as exc:
            self.error = exc
            return self._nothing()

    def _nothing(self):
        import torch

        return torch.zeros(self._table.vocab.size, dtype=torch.bool)

    def try_advance(self, token_id: int) -> bool:
        """Consume `token_id` if allowed; return whether it was (the non-raising hot-path form)."""
        if self._finished or self.error is not None:
            return False
        if self._table.is_eos(token_id):
            if not self._table.automaton.can_end(self._state):
                return False
            self._finished = True
            return True
        try:
            nxt = self._table.next_state(self._state, token_id)
        except GrammarError as exc:
            self.error = exc
            return False
        if nxt is None:
            return False
        self._state = nxt
        return True

    def advance(self, token_id: int) -> None:
        """Consume `token_id`.

        Raises:
            TokenRejectedError: the token is not allowed in the current state.
        """
        if not self.try_advance(token_id):
            detail = "the matcher is finished" if self._finished else (str(self.error) if self.error else "")
            raise TokenRejectedError(token_id, detail)

    def is_accepting(self) -> bool:
        """Whether the text so far is a complete sentence (EOS would be allowed now)."""
        return self._finished or self._table.automaton.can_end(self._state)

    def is_finished(self) -> bool:
        """Whether EOS has been consumed."""
        return self._finished

    def fork(self) -> Matcher:
        """An independent copy at the same position (beam search, parallel samples)."""
        twin = Matcher.__new__(Matcher)
        twin._table = self._table
        twin._state = self._state
        twin._finished = self._finished
        twin.error = self.error
        return twin
