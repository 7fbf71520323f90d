"""The per-sequence matcher: where one generation stands in a constraint, token by token."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

from grammars.core.automaton import State
from grammars.core.budget import Budget, no_check
from grammars.core.distinct_keys import Keys
from grammars.errors import GrammarError, RollbackError, TokenRejectedError
from grammars.masking.masks import MaskTable

#: Tokens `rollback` can undo: the longest draft speculative decoding verifies, with room to spare.
MAX_ROLLBACK_TOKENS = 64


class Matcher:
    """Tracks one sequence through a compiled constraint: the mask of allowed next tokens, advancing
    by a sampled token, and the token-level operations of the fast paths (`forced_bytes` for
    jump-forward; `check_tokens` and `rollback` for speculative decoding).

    The hot path does not raise: `mask()` on a state the engine cannot handle (a size budget, or its
    time budget, exceeded) sets `error` and allows nothing; the runtime turns that into an error at
    the request boundary.
    Create matchers with `Constraint.matcher(vocab)`.
    """

    def __init__(self, table: MaskTable) -> None:
        self._table = table
        self._state: State = table.automaton.initial
        self._finished = False
        #: Keys of the open JSON objects, where the grammar says they must be distinct, else None.
        self._keys: Keys | None = table.automaton.initial_keys
        #: (state, keys) before each of the last tokens advanced, oldest first.
        self._history: deque[tuple[State, Keys | None]] = deque(maxlen=MAX_ROLLBACK_TOKENS)
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
        check = no_check if max_seconds is None else Budget(max_seconds, what="computing a token mask").check
        try:
            keys = self._keys if self._keys is not None and self._keys.has_seen_keys else None
            if max_remaining_tokens is not None:
                fits = self._table.budget_allowed(self._state, max_remaining_tokens, check)
                if fits is not None and keys is not None:
                    fits &= self._table.allowed_with_keys(self._state, keys, check)
                if fits is not None and fits.any():
                    import torch

                    return torch.from_numpy(fits)
            if keys is not None:
                return self._table.mask_with_keys(self._state, keys, check)
            return self._table.mask(self._state, check)
        except GrammarError as exc:
            self.error = exc
            return self._nothing()

    def closing_mask(self, max_seconds: float | None = None, max_remaining_tokens: int | None = None):
        """`mask()` less the tokens that bring the text no closer to an end: kept are those after
        which the shortest completion is shorter than it is now (and EOS where the text may end);
        the plain mask when none is. The runtime's runaway guard (`runtime.engine.runaway`)
        samples a looping generation from it, so every text it leads to is still a sentence."""
        if self._finished or self.error is not None:
            return self._nothing()
        try:
            distance = self._table.shortest_completion(self._state)
        except GrammarError as exc:
            self.error = exc
            return self._nothing()
        if distance == math.inf:
            return self.mask(max_seconds, max_remaining_tokens)
        # A budget of distance + 1 keeps the tokens after which distance - 1 tokens still end the text.
        closer = int(distance) + 1
        return self.mask(max_seconds, closer if max_remaining_tokens is None else min(closer, max_remaining_tokens))

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
            self._history.append((self._state, self._keys))
            self._finished = True
            return True
        try:
            keyed = self._next(self._state, self._keys, token_id)
        except GrammarError as exc:
            self.error = exc
            return False
        if keyed is None:
            return False
        self._history.append((self._state, self._keys))
        self._state, self._keys = keyed
        return True

    def _next(self, state: State, keys: Keys | None, token_id: int) -> tuple[State, Keys | None] | None:
        """Where `token_id` (not EOS) leads from (state, keys); None where it is not allowed."""
        if keys is None:
            nxt = self._table.next_state(state, token_id)
            return None if nxt is None else (nxt, None)
        return self._table.next_state_keyed(state, keys, token_id)

    def check_tokens(self, token_ids: Sequence[int]) -> int:
        """How many of `token_ids`, in order, the constraint takes from here (EOS ends the text, so
        nothing after it counts); the matcher does not move. The same test as `try_advance`: token
        budgets (`mask(max_remaining_tokens=...)`) are left to the masks. A token whose walk fails
        (a lexer budget) is not taken, and `error` is left alone (advancing to it sets it)."""
        if self._finished or self.error is not None:
            return 0
        state, keys = self._state, self._keys
        for count, token_id in enumerate(token_ids):
            if self._table.is_eos(token_id):
                return count + 1 if self._table.automaton.can_end(state) else count
            try:
                keyed = self._next(state, keys, token_id)
            except GrammarError:
                return count
            if keyed is None:
                return count
            state, keys = keyed
        return len(token_ids)

    def rollback(self, num_tokens: int) -> None:
        """Undo the last `num_tokens` tokens advanced (EOS included): the draft tokens verification
        rejected, so one matcher serves speculative decoding. `error` stays (it is sticky).

        Raises:
            RollbackError: `num_tokens` is negative or more than the matcher remembers (the last
                MAX_ROLLBACK_TOKENS at most; a fork remembers its parent's); nothing is undone then.
        """
        if not 0 <= num_tokens <= len(self._history):
            raise RollbackError(
                f"cannot roll back {num_tokens} tokens: the matcher remembers the last {len(self._history)}"
                f" (at most {MAX_ROLLBACK_TOKENS})"
            )
        if num_tokens == 0:
            return
        for _ in range(num_tokens - 1):
            self._history.pop()
        self._state, self._keys = self._history.pop()
        self._finished = False

    def forced_bytes(self) -> bytes:
        """The bytes every valid continuation from here starts with (`GrammarAutomaton.forced_bytes`;
        empty where the text may end or the next byte is open, and once finished or failed): what
        jump-forward may append without sampling. Cached per automaton state: a repeat is a lookup."""
        if self._finished or self.error is not None:
            return b""
        try:
            return self._table.automaton.forced_bytes(self._state, self._keys)
        except GrammarError as exc:
            self.error = exc
            return b""

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
        """An independent copy at the same position (beam search, parallel samples), with the same
        tokens to roll back."""
        twin = Matcher.__new__(Matcher)
        twin._table = self._table
        twin._state = self._state
        twin._keys = self._keys
        twin._history = self._history.copy()
        twin._finished = self._finished
        twin.error = self.error
        return twin
