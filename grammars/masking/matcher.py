"""The per-sequence matcher: where one generation stands in a constraint, token by token."""

from __future__ import annotations

from grammars.core.automaton import State
from grammars.errors import GrammarError, TokenRejectedError
from grammars.masking.masks import MaskTable

#: Longest run of forced bytes `forced_bytes()` reports at once.
MAX_FORCED_BYTES = 1024


class Matcher:
    """Tracks one sequence through a compiled constraint: the mask of allowed next tokens, advancing
    by a sampled token, rolling back for speculation, and the text the grammar forces next.

    The hot path does not raise: `mask()` on a state the engine cannot handle (a budget exceeded)
    sets `error` and allows nothing; the runtime turns that into an error at the request boundary.
    Create matchers with `Constraint.matcher(vocab)`.
    """

    def __init__(self, table: MaskTable) -> None:
        self._table = table
        self._state: State = table.automaton.initial
        self._history: list[State] = []
        self._finished = False
        self.error: GrammarError | None = None

    def mask(self):
        """bool torch tensor [vocab.size]: True where the token may come next. Shared: do not modify."""
        if self._finished or self.error is not None:
            return self._nothing()
        try:
            return self._table.mask(self._state)
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
            self._history.append(self._state)
            self._finished = True
            return True
        try:
            nxt = self._table.next_state(self._state, token_id)
        except GrammarError as exc:
            self.error = exc
            return False
        if nxt is None:
            return False
        self._history.append(self._state)
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

    @property
    def num_tokens(self) -> int:
        """Tokens consumed so far (the depth `rollback` can undo)."""
        return len(self._history)

    def rollback(self, num_tokens: int) -> None:
        """Undo the last `num_tokens` advances (speculative decoding, jump-forward retokenization).

        Raises:
            GrammarError: more tokens than were consumed.
        """
        if num_tokens < 0 or num_tokens > len(self._history):
            raise GrammarError(f"cannot roll back {num_tokens} tokens after {len(self._history)}")
        if num_tokens == 0:
            return
        self._state = self._history[-num_tokens]
        del self._history[-num_tokens:]
        self._finished = False

    def fork(self) -> Matcher:
        """An independent copy at the same position (beam search, parallel samples)."""
        twin = Matcher.__new__(Matcher)
        twin._table = self._table
        twin._state = self._state
        twin._history = list(self._history)
        twin._finished = self._finished
        twin.error = self.error
        return twin

    def forced_bytes(self) -> bytes:
        """The bytes the constraint forces next (only one continuation and the text cannot end), up
        to MAX_FORCED_BYTES: the text jump-forward decoding appends without running the model."""
        automaton = self._table.automaton
        state = self._state
        forced = bytearray()
        while len(forced) < MAX_FORCED_BYTES and not self._finished and not automaton.can_end(state):
            successors = [(b, automaton.walk(state, bytes((b,)))) for b in range(256)]
            valid = [(b, s) for b, s in successors if s is not None]
            if len(valid) != 1:
                break
            forced.append(valid[0][0])
            state = valid[0][1]  # type: ignore[assignment]
        return bytes(forced)
