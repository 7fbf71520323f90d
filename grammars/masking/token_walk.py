"""What tokens do from a lexer state: vectorized over the vocabulary, byte position by position.

From a lexer state, a token either stays inside the current lexeme (the lexer is still alive after
its last byte: allowed whatever the parser says, since the parser allowed every terminal the lexer
state still holds), ends the lexeme at some byte and goes on with a new lexeme (a *boundary* token,
which the parser must settle), or dies. `advance_rows` runs a set of tokens at once with numpy,
keeping only the tokens still alive, and reports boundary tokens grouped by (lexer state before the
ending byte, position): the parser then settles each group once, not each token. The walk of the
whole vocabulary from a lexer state does not depend on the grammar, so it is cached per
(vocabulary, lexer state) and shared by every grammar that reaches the state.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from grammars.core.budget import Check
from grammars.core.lexer import DEAD, LexerTables
from grammars.masking.vocab import Vocabulary, WalkArrays

#: Lexer states whose whole-vocabulary walks are kept per vocabulary.
MAX_CACHED_WALKS = 4096
#: Above this many inside tokens a walk keeps a dense mask: copying it beats scattering the ids.
DENSE_INSIDE_THRESHOLD = 2048


@dataclass(frozen=True)
class RowWalk:
    """The fate of a set of tokens (rows of the vocabulary's walk arrays) from one lexer state.

    inside_rows: tokens that end with the lexer still inside a live lexeme.
    boundaries: (lexer state before the byte that ends the lexeme, position of that byte, rows).
    """

    inside_rows: np.ndarray
    boundaries: tuple[tuple[int, int, np.ndarray], ...]


@dataclass(frozen=True)
class StateWalk:
    """The whole vocabulary's walk from one lexer state, with the inside tokens as a mask.

    inside_mask: bool[vocab.size], dense for wide states (the inside of a string), else None and
        `inside_ids` holds the few ids.
    """

    inside_ids: np.ndarray
    inside_mask: np.ndarray | None
    boundaries: tuple[tuple[int, int, np.ndarray], ...]

    def new_mask(self, size: int) -> np.ndarray:
        """A fresh bool[size] array with the inside tokens set."""
        if self.inside_mask is not None:
            return self.inside_mask.copy()
        mask = np.zeros(size, dtype=bool)
        mask[self.inside_ids] = True
        return mask


def advance_rows(
    arrays: WalkArrays, lexer: LexerTables, sid: int, rows: np.ndarray, offset: int, check: Check
) -> RowWalk:
    """Walk the tokens `rows` (each longer than `offset`) from byte `offset` through lexer state `sid`.

    A token whose byte at `offset` cannot extend the lexeme is a boundary at `offset` if `sid`
    accepts (the lexeme ends before the token's remaining bytes).

    Raises:
        ConstraintLimitError: `check` stopped the walk (checked before each new lexer row).
    """
    lengths, columns = arrays.lengths, arrays.columns
    states = np.full(rows.size, sid, dtype=np.int32)
    inside: list[np.ndarray] = []
    boundaries: list[tuple[int, int, np.ndarray]] = []
    position = offset
    while rows.size:
        lexer.ensure_rows(states, check)
        # Flat gathers (row * 256 + byte) beat two-dimensional fancy indexing severalfold.
        nxt = lexer.trans.ravel().take(states.astype(np.int64) * 256 + columns[position].take(rows))
        dead = nxt == DEAD
        if dead.any():
            ends = dead & lexer.accepting.take(states)
            if ends.any():
                ending_rows, ending_states = rows[ends], states[ends]
                for before in np.unique(ending_states).tolist():
                    boundaries.append((before, position, ending_rows[ending_states == before]))
            alive = ~dead
            rows, nxt = rows[alive], nxt[alive]
        position += 1
        done = lengths.take(rows) == position
        if done.any():
            inside.append(rows[done])
            rows, nxt = rows[~done], nxt[~done]
        states = nxt
    inside_rows = np.concatenate(inside) if inside else np.zeros(0, dtype=np.int64)
    return RowWalk(inside_rows, tuple(boundaries))


def final_states(arrays: WalkArrays, lexer: LexerTables, sid: int, rows: np.ndarray, check: Check) -> np.ndarray:
    """int32 per row of `rows`: the lexer state after all of the token's bytes from `sid`, or DEAD
    where the lexeme cannot take them all (the token ends it, or leaves the language).

    Raises:
        ConstraintLimitError: `check` stopped the walk (checked before each new lexer row).
    """
    lengths, columns = arrays.lengths, arrays.columns
    states = np.full(rows.size, sid, dtype=np.int32)
    token_lengths = lengths.take(rows)
    for position in range(int(token_lengths.max(initial=0))):
        live = (states != DEAD) & (token_lengths > position)
        if not live.any():
            break
        live_states = states[live]
        lexer.ensure_rows(live_states, check)
        # Flat gathers (row * 256 + byte), as in `advance_rows`.
        states[live] = lexer.trans.ravel().take(live_states.astype(np.int64) * 256 + columns[position].take(rows[live]))
    return states


_walk_lock = threading.Lock()


def walk_state(vocab: Vocabulary, lexer: LexerTables, sid: int, check: Check) -> StateWalk:
    """The (cached) walk of every token of `vocab` from lexer state `sid`, skipping tokens whose first
    byte cannot extend the lexeme (callers handle a lexeme that ends before the token).

    Raises:
        ConstraintLimitError: `check` stopped the walk (the walk is not cached then).
    """
    cache: dict[tuple[int, int], StateWalk] = vocab.__dict__.setdefault("_state_walks", {})
    sid = lexer.walk_representative(sid, vocab.walk_arrays.max_len)
    key = (lexer.generation, sid)  # state ids are per lexer generation
    walk = cache.get(key)
    if walk is None:
        with _walk_lock:
            walk = cache.get(key)
            if walk is None:
                walk = _walk_vocabulary(vocab, lexer, sid, check)
                if len(cache) >= MAX_CACHED_WALKS:
                    cache.clear()
                cache[key] = walk
    return walk


def _walk_vocabulary(vocab: Vocabulary, lexer: LexerTables, sid: int, check: Check) -> StateWalk:
    arrays = vocab.walk_arrays
    extends = np.asarray(lexer.row(sid), dtype=np.int32) != DEAD
    rows = advance_rows(arrays, lexer, sid, arrays.rows_starting_with(extends), 0, check)
    inside_ids = arrays.ids[rows.inside_rows]
    inside_mask = None
    if inside_ids.size > DENSE_INSIDE_THRESHOLD:
        inside_mask = np.zeros(vocab.size, dtype=bool)
        inside_mask[inside_ids] = True
    return StateWalk(inside_ids, inside_mask, rows.boundaries)
