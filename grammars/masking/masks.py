"""Token masks of one grammar over one vocabulary, shared by all of that pair's matchers.

A mask for automaton state `(config, sid)` is the lexer-state walk (`grammars.masking.token_walk`: tokens
inside the lexeme, computed once per lexer state for every grammar) plus the boundary tokens this
grammar's parser accepts, plus — when the current lexeme may end here — the tokens that start the
next lexeme, which is the mask of the boundary state restricted to first bytes that cannot extend
the current lexeme. Masks are cached per state, so a repeated structure (array items, the inside of
every string of a field) costs a dict lookup after the first time.
"""

from __future__ import annotations

import hashlib
import threading
import time

import numpy as np

from grammars.core.automaton import GrammarAutomaton, State
from grammars.core.budget import Check
from grammars.core.completion import CompletionLengths, token_counter
from grammars.core.distinct_keys import Keys, refuses, walk_keyed
from grammars.core.lexer import DEAD
from grammars.errors import ConstraintLimitError
from grammars.masking.token_walk import advance_rows, final_states, walk_state
from grammars.masking.vocab import Vocabulary

#: States whose masks are kept per (grammar, vocabulary) before the cache is cleared.
MAX_CACHED_STATES = 65536
#: Bytes of distinct masks kept per table (each is one byte per token: 1,365 masks of a 49k vocabulary,
#: 256 of a 262k one). States with equal masks share one array, and most do (every position inside
#: one kind of string, say), so this bounds a table's memory; duplicate-key masks count in it too.
MAX_MASK_BYTES = 64 << 20
#: Seconds after a mask ran past a budget during which the table refuses new masks at once.
FAILURE_COOLDOWN_SECONDS = 60.0
#: States whose per-token completion lengths are kept (one float32 per token each) for budget masks.
MAX_CACHED_LENGTHS = 64
#: Boundary groups up to this size are settled token by token (memoized scalar walks beat numpy's
#: per-call overhead on a handful of tokens); larger groups are walked vectorized.
MAX_SCALAR_GROUP = 32


class MaskTable:
    """Allowed tokens and token transitions of `automaton` over `vocab`.

    A mask that runs past a budget (`ConstraintLimitError`) fails every later mask this table has
    not cached, at once, for FAILURE_COOLDOWN_SECONDS: the lexer rows a stopped walk computed stay
    cached, so retrying a grammar that slow request after request would grow memory by a walk's worth
    each time. After the cool-down one request may try again (a budget missed on a busy machine does
    not disable a constraint for good).
    """

    def __init__(self, automaton: GrammarAutomaton, vocab: Vocabulary) -> None:
        self.automaton = automaton
        self.vocab = vocab
        self._eos_ids = np.array(vocab.eos_token_ids, dtype=np.int64)
        self._eos_set = frozenset(vocab.eos_token_ids)
        self._allowed: dict[State, np.ndarray] = {}
        self._distinct: dict[bytes, np.ndarray] = {}
        self._tensors: dict[State, object] = {}
        self._next_lengths: dict[State, tuple[np.ndarray, float]] = {}
        #: Per state, the longest shortest-completion after any allowed token: a float, so kept for
        #: many more states than the arrays, and enough to see that a loose budget removes nothing.
        self._longest: dict[State, float] = {}
        self._completions: CompletionLengths | None = None
        #: Per (state, keys): the allowed tokens, and their tensor once `mask_with_keys` made it.
        self._keyed: dict[tuple[State, Keys], tuple[np.ndarray, object]] = {}
        self._lock = threading.RLock()
        self.failure: ConstraintLimitError | None = None
        self._failed_at = 0.0

    def allowed(self, state: State, check: Check) -> np.ndarray:
        """bool[vocab.size]: the tokens allowed in `state` (EOS only where the text may end).

        Raises:
            ConstraintLimitError: `check` stopped the computation (its time budget; nothing is cached then).
        """
        found = self._allowed.get(state)
        if found is None:
            with self._lock:
                found = self._allowed.get(state)
                if found is None:
                    self._make_room()
                    if self.failure is not None:
                        if time.monotonic() - self._failed_at < FAILURE_COOLDOWN_SECONDS:
                            # A fresh error: re-raising one object would grow its traceback.
                            raise ConstraintLimitError(f"an earlier mask of this constraint failed: {self.failure}")
                        self.failure = None
                    try:
                        computed = self._compute(state, check)
                    except ConstraintLimitError as exc:
                        self.failure, self._failed_at = exc, time.monotonic()
                        raise
                    found = self._allowed[state] = self._shared(computed)
        return found

    def _make_room(self) -> None:
        """Forget every cached mask when the state caches or the distinct masks are full (under the lock)."""
        full = len(self._allowed) >= MAX_CACHED_STATES or len(self._keyed) >= MAX_CACHED_STATES
        if full or (len(self._distinct) + 1) * self.vocab.size > MAX_MASK_BYTES:
            self._allowed.clear()
            self._distinct.clear()
            self._tensors.clear()
            self._keyed.clear()

    def _shared(self, mask: np.ndarray) -> np.ndarray:
        """The one kept array equal to `mask` (under the lock, after `_make_room`)."""
        # Hashing the packed bits: an eighth of the bytes (the hash of the bools dominated a fresh mask).
        return self._distinct.setdefault(hashlib.blake2b(np.packbits(mask).data, digest_size=16).digest(), mask)

    def allowed_with_keys(self, state: State, keys: Keys, check: Check) -> np.ndarray:
        """`allowed(state)` less the tokens that repeat a key of an open object or leave no fresh
        key where one must come (`grammars.core.distinct_keys`); cached per (state, keys).

        Only tokens holding a `"` or `,` can begin, end or demand a key, and of the tokens that stay
        inside the current lexeme only a separator's comma can (inside a string nothing can; inside
        a key the lexer state is the restricted one). So the few that remain are walked one by one.

        Raises:
            ConstraintLimitError: `check` stopped the computation.
        """
        found = self._keyed.get((state, keys))
        if found is not None:
            return found[0]
        allowed = self.allowed(state, check)
        config, sid = state
        lexer_sid = self.automaton.lexer_start(config) if sid is None else sid
        walk = walk_state(self.vocab, self.automaton.lexer, lexer_sid, check)
        touches, comma_first = self.vocab.key_punctuation
        inside = walk.new_mask(self.vocab.size)
        if not keys.awaits_quote:
            inside &= ~comma_first  # `, ` may lead to where a key must come
        suspects = allowed & touches & ~inside
        token_bytes = self.vocab.token_bytes
        refused = [
            token_id
            for token_id in np.flatnonzero(suspects).tolist()
            if refuses(self.automaton, state, keys, token_bytes[token_id], check)
        ]
        with self._lock:
            self._make_room()
            if refused:
                allowed = allowed.copy()
                allowed[refused] = False
                allowed = self._shared(allowed)
            self._keyed[(state, keys)] = (allowed, None)
        return allowed

    def mask_with_keys(self, state: State, keys: Keys, check: Check):
        """`allowed_with_keys` as a torch bool tensor sharing its memory (do not modify it)."""
        found = self._keyed.get((state, keys))
        if found is None or found[1] is None:
            import torch

            allowed = self.allowed_with_keys(state, keys, check)
            tensor = self.mask(state, check) if allowed is self._allowed.get(state) else torch.from_numpy(allowed)
            found = self._keyed[(state, keys)] = (allowed, tensor)
        return found[1]

    def mask(self, state: State, check: Check):
        """`allowed(state, check)` as a torch bool tensor sharing its memory (do not modify it)."""
        tensor = self._tensors.get(state)
        if tensor is None:
            import torch

            tensor = torch.from_numpy(self.allowed(state, check))
            self._tensors[state] = tensor
        return tensor

    def budget_allowed(self, state: State, max_remaining_tokens: int, check: Check) -> np.ndarray | None:
        """The tokens of `allowed(state)` after which a complete text still fits in
        `max_remaining_tokens` tokens (this one and the end-of-sequence token included), or None
        when that is all of them, or when none fits (the budget cannot be met: the plain mask stands).

        Completions are counted in tokens of this vocabulary (`CompletionLengths` with a
        `TokenCounter`: each lexeme the fewer of its bytes, each a token of its own, and the tokens
        of its tokenized shortest strings): a token is kept when the shortest completion after it
        takes at most `max_remaining_tokens - 2` tokens. That count never gets stuck (some token
        always lowers it by one), so a kept token never strands the text.
        Not cached as the state's mask: it depends on the budget.

        Raises:
            ConstraintLimitError: `check` stopped the computation, or a parser budget.
        """
        max_length = max_remaining_tokens - 2
        known = self._longest.get(state)
        if known is not None and known <= max_length:
            return None
        allowed = self.allowed(state, check)
        lengths, longest = self._lengths_after_tokens(state, allowed, check)
        if longest <= max_length:
            return None
        fits = allowed & (lengths <= max_length)
        fits[self._eos_ids] = allowed[self._eos_ids]
        if not fits.any():
            return None
        return fits

    def _lengths_after_tokens(self, state: State, allowed: np.ndarray, check: Check) -> tuple[np.ndarray, float]:
        """float32[vocab.size]: the shortest completion (tokens) after each allowed token (inf
        elsewhere, and for EOS), and its maximum over the allowed tokens."""
        found = self._next_lengths.get(state)
        if found is not None:
            return found
        automaton = self.automaton
        completions = self._completion_lengths()
        arrays = self.vocab.walk_arrays
        config, sid = state
        lengths = np.full(self.vocab.size, np.inf, dtype=np.float32)
        ids = np.flatnonzero(allowed[: len(arrays.row_of_id)])
        ids = ids[arrays.row_of_id[ids] >= 0]  # EOS and other tokens without bytes
        lexer_sid = automaton.lexer_start(config) if sid is None else sid
        ends = final_states(arrays, automaton.lexer, lexer_sid, arrays.row_of_id[ids], check)
        # Tokens inside the lexeme: one completion per lexer state they reach.
        for inner in np.unique(ends[ends != DEAD]).tolist():
            lengths[ids[ends == inner]] = completions.of_state((config, inner))
        # Tokens that end a lexeme: walked one by one (memoized walks).
        token_bytes = self.vocab.token_bytes
        for token_id in ids[ends == DEAD].tolist():
            check()
            nxt = automaton.walk(state, token_bytes[token_id])
            if nxt is not None:
                lengths[token_id] = completions.of_state(nxt)
        longest = float(lengths[ids].max(initial=0.0))
        with self._lock:
            if len(self._next_lengths) >= MAX_CACHED_LENGTHS:
                self._next_lengths.clear()
            if len(self._longest) >= MAX_CACHED_STATES:
                self._longest.clear()
            self._next_lengths[state] = (lengths, longest)
            self._longest[state] = longest
        return lengths, longest

    def shortest_completion(self, state: State) -> float:
        """Tokens the shortest completion after `state` takes (at most; 0 when the text may end
        now, `math.inf` when none can); see `budget_allowed`.

        Raises:
            ConstraintLimitError: a parser budget.
        """
        return self._completion_lengths().of_state(state)

    def _completion_lengths(self) -> CompletionLengths:
        """The automaton's shortest completions in this vocabulary's tokens (built on first use:
        one pass over the parser)."""
        if self._completions is None:
            with self._lock:
                if self._completions is None:
                    tokens = token_counter(self.vocab.token_bytes, self.vocab.single_byte_tokens)
                    self._completions = CompletionLengths(self.automaton, tokens=tokens)
        return self._completions

    def next_state(self, state: State, token_id: int) -> State | None:
        """The state after `token_id` (not EOS), or None if the token is not allowed."""
        data = self.vocab.token_bytes[token_id] if 0 <= token_id < len(self.vocab.token_bytes) else None
        if not data:
            return None
        return self.automaton.walk(state, data)

    def next_state_keyed(self, state: State, keys: Keys, token_id: int) -> tuple[State, Keys] | None:
        """`next_state` that also tracks the keys of open JSON objects (`allowed_with_keys`)."""
        data = self.vocab.token_bytes[token_id] if 0 <= token_id < len(self.vocab.token_bytes) else None
        if not data:
            return None
        return walk_keyed(self.automaton, state, keys, data)

    def is_eos(self, token_id: int) -> bool:
        return token_id in self._eos_set

    def _compute(self, state: State, check: Check) -> np.ndarray:
        automaton = self.automaton
        arrays = self.vocab.walk_arrays
        config, sid = state
        lexer_sid = automaton.lexer_start(config) if sid is None else sid
        walk = walk_state(self.vocab, automaton.lexer, lexer_sid, check)
        allowed = walk.new_mask(self.vocab.size)
        for before, position, rows in walk.boundaries:
            allowed[arrays.ids[self._settle(config, before, rows, position, check)]] = True
        if sid is not None and automaton.lexer.accepting[lexer_sid]:
            ended = automaton.end_lexeme(config, lexer_sid)
            if ended is not None:
                # Tokens whose first byte cannot extend the lexeme end it and start the next one.
                cannot_extend = np.append(np.asarray(automaton.lexer.row(lexer_sid)) == DEAD, False)
                first_bytes = arrays.first_byte_of_id
                width = len(first_bytes)
                allowed[:width] |= self.allowed((ended, None), check)[:width] & cannot_extend[first_bytes]
        allowed[self._eos_ids] = automaton.can_end(state)
        return allowed

    def _settle(self, config: int, before: int, rows: np.ndarray, position: int, check: Check) -> np.ndarray:
        """The rows among boundary tokens (lexeme ending in lexer state `before` just before
        `position`) whose remaining bytes the grammar accepts."""
        automaton = self.automaton
        ended = automaton.end_lexeme(config, before)
        if ended is None:
            return rows[:0]
        config = ended

        if rows.size <= MAX_SCALAR_GROUP:
            ids, token_bytes = self.vocab.walk_arrays.ids, self.vocab.token_bytes
            start = (config, None)
            keep = []
            for token_id in ids[rows].tolist():
                check()
                keep.append(automaton.walk(start, token_bytes[token_id][position:]) is not None)
            return rows[np.array(keep, dtype=bool)]
        walk = advance_rows(
            self.vocab.walk_arrays, automaton.lexer, automaton.lexer_start(config), rows, position, check
        )
        accepted = [walk.inside_rows]
        # A fresh lexeme consumes at least one byte before it can end (lexemes are non-nullable),
        # so every nested boundary lies further on and the recursion ends within the token.
        for nested_before, nested_position, nested_rows in walk.boundaries:
            accepted.append(self._settle(config, nested_before, nested_rows, nested_position, check))
        return np.concatenate(accepted)
