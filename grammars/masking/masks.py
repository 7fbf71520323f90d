"""Token masks of one grammar over one vocabulary, shared by all of that pair's matchers.

A mask for automaton state `(config, sid)` is the lexer-state walk (`grammars.masking.token_walk`: tokens
inside the lexeme, computed once per lexer state for every grammar) plus the boundary tokens this
grammar's parser accepts (`grammars.masking.settle`): those that end the lexeme mid-token and, when
it may end here, those whose first byte cannot extend it. Masks are cached per state, so a repeated
structure (array items, the inside of every string of a field) costs a dict lookup after the first time;
equal masks are one object, shared by every table of the vocabulary (`MaskPool`).
"""

from __future__ import annotations

import enum
import threading
import time
import weakref
from collections import OrderedDict
from typing import NamedTuple

import numpy as np

from grammars.core.automaton import GrammarAutomaton, State
from grammars.core.budget import Check
from grammars.core.completion import CompletionLengths, token_counter
from grammars.core.distinct_keys import Keys, may_need_check, refusals, walk_keyed
from grammars.core.lexer import DEAD
from grammars.errors import ConstraintLimitError
from grammars.masking import token_bits, token_walk
from grammars.masking.settle import GroupSettler
from grammars.masking.token_walk import StateWalk, final_states, walk_state
from grammars.masking.vocab import Vocabulary

#: States whose masks are kept per (grammar, vocabulary) before the cache is cleared.
MAX_CACHED_STATES = 65536
#: Bytes of distinct masks kept per table (each is one byte per token, and its packed bits as its
#: identity: 1,213 masks of a 49k vocabulary, 227 of a 262k one). States with equal masks share one
#: array, and most do (every position inside one kind of string, say), so this bounds a table's memory;
#: duplicate-key masks count in it too.
MAX_MASK_BYTES = 64 << 20
#: Bytes of distinct masks a vocabulary keeps for all its tables (`MaskPool`): 606 masks of a 49k
#: vocabulary, 113 of a 262k one.
MAX_POOLED_MASK_BYTES = 32 << 20
#: Seconds after a mask ran past a budget during which the table refuses new masks at once.
FAILURE_COOLDOWN_SECONDS = 60.0
#: States whose per-token completion lengths are kept (one float32 per token each) for budget masks.
MAX_CACHED_LENGTHS = 64
#: Lexer states whose walks (`MaskTable._walk`) a table holds weak references to.
MAX_HELD_WALKS = 1024
_QUOTE = ord('"')
#: Guards the vocabulary's caches of the tokens distinct-keys masks check (`_key_suspects`) and its mask pool.
_vocabulary_caches_lock = threading.Lock()


class _Quotes(enum.IntEnum):
    """Which tokens holding a `"` a distinct-keys mask walks: none (no fresh key is awaited), all of
    them, or those holding one past their first byte (a key their first byte begins starts in a
    restricted lexer state already: `MaskTable._first_quote_is_restricted`). An IntEnum: it keys a
    dict in every new distinct-keys mask, where an Enum's hash is a Python call."""

    NONE = 0
    ALL = 1
    AFTER_FIRST_BYTE = 2


class _Suspects(NamedTuple):
    """The tokens a distinct-keys mask checks from one key scanner mode (`_key_suspects`): int32 ids,
    and per id whether it counts even where it stays inside the walk's lexeme."""

    ids: np.ndarray
    inside_too: np.ndarray


def _key_suspects(vocab: Vocabulary, keys: Keys, keys_may_run_out: bool, quotes: _Quotes) -> _Suspects:
    """The tokens `allowed_with_keys` checks after text that leaves the key scanner as `keys` does
    (its mode, and whether a backslash came last), wherever the lexer stands: those holding a `,` or,
    as `quotes` says, a `"`, less those `refusals` passes by (`distinct_keys.may_need_check`). A token
    the walk keeps inside the current lexeme counts only as a separator's comma, outside a string
    and where no quote is awaited (`inside_too`). Made once per vocabulary and arguments, from a few
    hundred tokens at most: what is left (none, mostly, where keys never run out) is all a new mask
    looks at."""
    tables: dict[tuple[int, bool, bool, _Quotes], _Suspects] = vocab.__dict__.setdefault("_key_suspects", {})
    key = (keys.mode, keys.is_escaped, keys_may_run_out, quotes)
    found = tables.get(key)
    if found is None:
        kinds = vocab.key_tokens
        ids = {
            _Quotes.NONE: kinds.comma,
            _Quotes.ALL: kinds.comma_or_quote,
            _Quotes.AFTER_FIRST_BYTE: kinds.comma_or_late_quote,
        }[quotes]
        token_bytes = vocab.token_bytes
        needed = [may_need_check(token_bytes[i], keys.mode, keys.is_escaped, keys_may_run_out) for i in ids.tolist()]
        ids = ids[np.array(needed, dtype=bool)]
        # `, ` may lead to where a key must come, from inside a value's lexeme too.
        found = _Suspects(ids.astype(np.int32), kinds.comma_first[ids] & (not keys.awaits_quote))
        with _vocabulary_caches_lock:
            found = tables.setdefault(key, found)
    return found


def _walked_suspects(allowed: np.ndarray, inside_bits: np.ndarray, suspects: _Suspects) -> list[int]:
    """The ids of `suspects` that `allowed` allows and that leave the walk's lexeme (not in
    `inside_bits`) or count inside it too: compiled in one call where the extension is built (numpy's
    gathers cost a tenth of a cold mask)."""
    if token_walk.native_walk is not None:
        return token_walk.native_walk.walked_suspects(allowed, inside_bits, suspects.ids, suspects.inside_too)
    ids = suspects.ids
    return ids[allowed[ids] & (suspects.inside_too | ~token_bits.contains(inside_bits, ids))].tolist()


class _Mask:
    """One distinct mask of a table (`MaskTable._shared`): the bytes of its bits (`token_bits`: its
    identity), its bool array, and that array's tensor, made on first use (`MaskTable._tensor`)."""

    __slots__ = ("packed", "allowed", "tensor")

    def __init__(self, packed: bytes, allowed: np.ndarray) -> None:
        self.packed = packed
        self.allowed = allowed
        self.tensor: object | None = None

    def bits(self) -> np.ndarray:
        """A fresh copy of its bits."""
        return np.frombuffer(self.packed, dtype=token_bits.WORD).copy()


class MaskPool:
    """The distinct masks of one vocabulary, shared by all its tables (`MaskTable._shared` looks here
    for a mask new to its table): about half the masks a new constraint makes were made by another
    one before (the first mask of every JSON object, the inside of a string, a number), and a pooled
    mask comes with its bool array and tensor made, which were a fifth of a first mask's time.
    Least recently used masks go first, past `max_masks`; tables keep the ones they hold."""

    def __init__(self, max_masks: int) -> None:
        self._buckets: OrderedDict[int, list[_Mask]] = OrderedDict()
        self._count = 0
        self._max_masks = max_masks
        self._lock = threading.Lock()

    def get(self, key: int, packed: bytes, size: int) -> _Mask:
        """The pooled mask of the bits `packed` (hash `key`, as `token_bits.identity` gives them),
        made here if none is."""
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = []
            else:
                self._buckets.move_to_end(key)
                for held in bucket:
                    if held.packed == packed:
                        return held
            entry = _Mask(packed, token_bits.to_mask(packed, size))
            bucket.append(entry)
            self._count += 1
            while self._count > self._max_masks and len(self._buckets) > 1:
                self._count -= len(self._buckets.popitem(last=False)[1])
            return entry

    def held(self) -> tuple[int, int]:
        """The masks pooled and their bytes (bool arrays and bits)."""
        with self._lock:
            masks = [mask for bucket in self._buckets.values() for mask in bucket]
        return len(masks), sum(mask.allowed.nbytes + len(mask.packed) for mask in masks)


def mask_pool(vocab: Vocabulary) -> MaskPool:
    """The vocabulary's pool of distinct masks (made on first use; MAX_POOLED_MASK_BYTES of them)."""
    found = vocab.__dict__.get("_mask_pool")
    if found is None:
        with _vocabulary_caches_lock:
            found = vocab.__dict__.get("_mask_pool")
            if found is None:
                found = vocab.__dict__["_mask_pool"] = MaskPool(MAX_POOLED_MASK_BYTES // (vocab.size + vocab.size // 8))
    return found


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
        self._allowed: dict[State, _Mask] = {}
        #: The distinct masks by a hash of their bits (`token_bits.identity`); most new states' masks
        #: equal one made before, and share its array and tensor.
        self._distinct: dict[int, list[_Mask]] = {}
        self._num_distinct = 0
        #: Distinct masks that fit in MAX_MASK_BYTES (each is its bool array and its packed bits).
        self._max_distinct = MAX_MASK_BYTES // (vocab.size + vocab.size // 8)
        self._next_lengths: dict[State, tuple[np.ndarray, float]] = {}
        #: Per state, the longest shortest-completion after any allowed token: a float, so kept for
        #: many more states than the arrays, and enough to see that a loose budget removes nothing.
        self._longest: dict[State, float] = {}
        self._completions: CompletionLengths | None = None
        #: Per (state, keys): the allowed tokens.
        self._keyed: dict[tuple[State, Keys], _Mask] = {}
        #: Per lexer state: a weak reference to its walk (`_walk`).
        self._walks: dict[int, weakref.ref[StateWalk]] = {}
        self._settler = GroupSettler(automaton, vocab)
        self._pool = mask_pool(vocab)
        self._lock = threading.RLock()
        self.failure: ConstraintLimitError | None = None
        self._failed_at = 0.0

    def allowed(self, state: State, check: Check) -> np.ndarray:
        """bool[vocab.size]: the tokens allowed in `state` (EOS only where the text may end).

        Raises:
            ConstraintLimitError: `check` stopped the computation (its time budget; nothing is cached then).
        """
        return self._entry(state, check).allowed

    def _entry(self, state: State, check: Check) -> _Mask:
        """The distinct mask of `state` (`allowed`), computed on first use."""
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
                    found = self._allowed[state] = self._shared(*computed)
        return found

    def _make_room(self) -> None:
        """Forget every cached mask when the state caches or the distinct masks are full (under the lock)."""
        if (
            self._num_distinct >= self._max_distinct
            or len(self._allowed) >= MAX_CACHED_STATES
            or len(self._keyed) >= MAX_CACHED_STATES
        ):
            self._allowed.clear()
            self._distinct.clear()
            self._num_distinct = 0
            self._keyed.clear()

    def _shared(self, key: int, packed: bytes) -> _Mask:
        """The one kept mask of the tokens a set holds, by its identity (`token_bits.identity`; under the
        lock, after `_make_room`): found by the hash `key`, and equal when the bytes `packed` are (the
        hash only picks the bucket). A mask new to the table comes from the vocabulary's pool."""
        bucket = self._distinct.setdefault(key, [])
        for held in bucket:
            if held.packed == packed:
                return held
        entry = self._pool.get(key, packed, self.vocab.size)
        bucket.append(entry)
        self._num_distinct += 1
        return entry

    def allowed_with_keys(self, state: State, keys: Keys, check: Check) -> np.ndarray:
        """`allowed(state)` less the tokens that repeat a key of an open object or leave no fresh
        key where one must come (`grammars.core.distinct_keys`); cached per (state, keys).

        The plain mask already walks the lexer state the matcher is in, which is restricted to
        fresh keys wherever a key is being written or begins at this state. What it cannot see is a
        key that begins *later* in a token, from a lexeme start the walk took unrestricted: after a
        comma (`", "b`), or where a key must come next and the token's quote does not open the
        current lexeme (` "b` after whitespace), and the tokens that end where a fresh key must come
        (`",`). Those tokens hold a `,` or, where a fresh key is awaited, a `"`, and of the tokens
        that stay inside the current lexeme only a separator's comma counts (inside a string
        nothing does). The few allowed ones are checked in one batch (`distinct_keys.refusals`).
        Where no object of the grammar can run out of fresh keys (most JSON Schemas:
        `GrammarAutomaton.keys_may_run_out`), only the tokens that close a key can be refused, so
        only those are checked.

        Raises:
            ConstraintLimitError: `check` stopped the computation.
        """
        return self._keyed_entry(state, keys, check).allowed

    def _keyed_entry(self, state: State, keys: Keys, check: Check) -> _Mask:
        """The distinct mask of (`state`, `keys`) (`allowed_with_keys`), computed on first use."""
        keyed = (state, keys)
        found = self._keyed.get(keyed)
        if found is not None:
            return found
        entry = self._entry(state, check)
        quotes = _Quotes.NONE
        if keys.awaits_fresh_key:
            # Where keys never run out, a token is checked only for the keys it closes, so which
            # quote begins a key does not narrow the suspects.
            exact = self.automaton.keys_may_run_out and self._first_quote_is_restricted(state, keys.object_keys, check)
            quotes = _Quotes.AFTER_FIRST_BYTE if exact else _Quotes.ALL
        suspects = _key_suspects(self.vocab, keys, self.automaton.keys_may_run_out, quotes)
        walked_ids = []
        if len(suspects.ids):
            config, sid = state
            walk = self._walk(self.automaton.lexer_start(config) if sid is None else sid, check)
            walked_ids = _walked_suspects(entry.allowed, walk.inside_bits, suspects)
        refused = []
        if walked_ids:
            token_bytes = self.vocab.token_bytes
            walked = [token_bytes[token_id] or b"" for token_id in walked_ids]  # each holds a `,` or a `"`
            refused = [walked_ids[index] for index in refusals(self.automaton, state, keys, walked, check)]
        with self._lock:
            self._make_room()
            if refused:
                bits = entry.bits()
                token_bits.assign_words(bits, token_bits.word_flags(refused), False)
                entry = self._shared(*token_bits.identity(bits))
            self._keyed[keyed] = entry
        return entry

    def _first_quote_is_restricted(self, state: State, seen: frozenset[str], check: Check) -> bool:
        """Whether a key that a token's first byte begins in `state` begins in a lexer state that
        already excludes the keys `seen` (the restricted start, or a start no lexeme of which spells
        them): then the plain walk of such tokens is exact."""
        automaton = self.automaton
        config, sid = state
        if sid is not None:
            if sid == automaton.lexer_start_excluding(config, seen, check):
                return True
            lexer = automaton.lexer
            if not lexer.accepting[sid] or lexer.step(sid, _QUOTE, check) != DEAD:
                return False  # the quote does not begin the next lexeme
            ended = automaton.end_lexeme(config, sid)
            if ended is None:
                return True  # the quote ends the text: the plain walk refuses it already
            config = ended
        return automaton.lexer_start_excluding(config, seen, check) == automaton.lexer_start(config, check)

    def mask_with_keys(self, state: State, keys: Keys, check: Check):
        """`allowed_with_keys` as a torch bool tensor sharing its memory (do not modify it)."""
        return self._tensor(self._keyed_entry(state, keys, check))

    def mask(self, state: State, check: Check):
        """`allowed(state, check)` as a torch bool tensor sharing its memory (do not modify it)."""
        return self._tensor(self._entry(state, check))

    @staticmethod
    def _tensor(entry: _Mask):
        """The tensor of a distinct mask, made once per mask: states with equal masks share it."""
        tensor = entry.tensor
        if tensor is None:
            import torch

            tensor = entry.tensor = torch.from_numpy(entry.allowed)
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

    def _compute(self, state: State, check: Check) -> tuple[int, bytes]:
        """The identity (`token_bits.identity`) of `state`'s mask: its walk's inside tokens, the
        boundary tokens the grammar accepts, and EOS where the text may end."""
        automaton = self.automaton
        config, sid = state
        lexer_sid = automaton.lexer_start(config) if sid is None else sid
        walk = self._walk(lexer_sid, check)
        # Where the lexeme may end here, tokens whose first byte cannot extend it end it first.
        ending = lexer_sid if sid is not None and automaton.lexer.accepting[lexer_sid] else None
        return self._settler.assemble(walk, config, ending, automaton.can_end(state), check)

    def _walk(self, lexer_sid: int, check: Check) -> StateWalk:
        """`walk_state` of `lexer_sid`, found here by a weak reference where this table walked the state
        before (most new states' masks do): a lookup that skips the vocabulary cache's representative
        and form lookups, and holds no walk that cache has let go."""
        held = self._walks.get(lexer_sid)
        walk = None if held is None else held()
        if walk is None:
            walk = walk_state(self.vocab, self.automaton.lexer, lexer_sid, check)
            with self._lock:
                if len(self._walks) >= MAX_HELD_WALKS:
                    self._walks.clear()
                self._walks[lexer_sid] = weakref.ref(walk)
        return walk
