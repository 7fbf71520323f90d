"""The lexer: a lazily built DFA whose states are byte-regex terms, shared by the grammars of a generation.

A lexer state is a union of tagged terms, one per terminal still alive (`byte_regex.tag`); its
successor on a byte is its derivative. States get dense ids (`sid`) in the order they are first
seen, and their transition rows (256 successors) are filled on first use, so a schema pays only for
the states its generations visit, and every schema shares the states of common terminals (the inside
of a JSON string, a number, whitespace).

The process keeps its lexer state bounded by generations: each automaton takes the current
`LexerTables` when it is built (`current_lexer()`) and keeps it for life, so its states stay valid;
once the current generation holds NEW_GENERATION_STATES states, automata built later get a fresh
one, and an old generation is freed with the last automaton (and mask table) that uses it. A server
that compiles a new schema per request therefore never exhausts MAX_STATES, which bounds one
generation (the states of the automata on it, minus what they left to later generations).

Rows live in one numpy table (for the vectorized vocabulary walks in `grammars.masking.token_walk`) mirrored
by Python lists (for the scalar byte walks of the matcher, where numpy scalar indexing is slow).
"""

from __future__ import annotations

import functools
import itertools
import threading
from collections.abc import Callable

import numpy as np

from grammars.core import byte_regex as rx
from grammars.core.budget import Check, no_check
from grammars.errors import ConstraintLimitError

#: The state with no continuation: the empty language.
DEAD = 0
#: Lexer states one generation may hold (a state costs about 1 KiB of table, plus its row list).
MAX_STATES = 1_000_000
#: States after which automata built later start a new generation.
NEW_GENERATION_STATES = 100_000


_GENERATIONS = itertools.count()


class LexerTables:
    """State numbering and transition rows of one generation of the lazy lexer DFA.

    Args:
        max_states: the states this generation may hold; beyond them `sid` raises.
    """

    def __init__(self, max_states: int = MAX_STATES) -> None:
        self.max_states = max_states
        #: Never reused: caches of other modules key lexer states by (generation, sid).
        self.generation = next(_GENERATIONS)
        self._lock = threading.RLock()
        self.terms: list[rx.Term] = []
        self._sid_of_term: dict[int, int] = {}
        capacity = 1024
        self.trans = np.zeros((capacity, 256), dtype=np.int32)  # [states, bytes] -> sid
        self.has_row = np.zeros(capacity, dtype=bool)
        self.accepting = np.zeros(capacity, dtype=bool)
        self.rows: list[list[int] | None] = []
        self._accepting_tags: list[tuple[int, ...]] = []
        self._representatives: dict[tuple[int, int], int] = {}
        self.sid(rx.EMPTY)  # DEAD == 0

    # ------------------------------------------------------------------------------------------
    @property
    def num_states(self) -> int:
        return len(self.terms)

    def sid(self, term: rx.Term, check: Check = no_check) -> int:
        """The state id of `term`, allocating one on first sight (DEAD for an empty language).

        Raises:
            ConstraintLimitError: the generation is full, or from `check` (an emptiness search).
        """
        found = self._sid_of_term.get(term.id)
        if found is not None:
            return found
        with self._lock:
            found = self._sid_of_term.get(term.id)
            if found is not None:
                return found
            if term is not rx.EMPTY and rx.is_empty(term, check) is True:
                self._sid_of_term[term.id] = DEAD
                return DEAD
            sid = len(self.terms)
            if sid >= self.max_states:
                raise ConstraintLimitError(f"the lexer exceeded its budget of {self.max_states} states")
            if sid >= len(self.has_row):
                self._grow()
            self.terms.append(term)
            self.rows.append(None)
            self.accepting[sid] = term.nullable
            self._accepting_tags.append(tuple(tag for tag, rest in rx.tags_of(term) if rest.nullable))
            self._sid_of_term[term.id] = sid
            return sid

    def _grow(self) -> None:
        capacity = 2 * len(self.has_row)
        trans = np.zeros((capacity, 256), dtype=np.int32)
        trans[: len(self.trans)] = self.trans
        has_row = np.zeros(capacity, dtype=bool)
        has_row[: len(self.has_row)] = self.has_row
        accepting = np.zeros(capacity, dtype=bool)
        accepting[: len(self.accepting)] = self.accepting
        # Readers holding the old arrays still see valid rows for the states they know.
        self.trans, self.has_row, self.accepting = trans, has_row, accepting

    def row(self, sid: int, check: Check = no_check) -> list[int]:
        """The successor of `sid` on each of the 256 bytes, computing it on first use.

        Raises:
            ConstraintLimitError: the generation is full, or from `check`.
        """
        row = self.rows[sid]
        if row is None:
            row = self._fill_row(sid, check)
        return row

    def tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(trans, has_row, accepting) taken together: `_grow` replaces all three, and a walk that
        mixed an old table with a newer `has_row` would read rows past the old table's end."""
        with self._lock:
            return self.trans, self.has_row, self.accepting

    def ensure_rows(self, sids: np.ndarray, before_row: Callable[[], None]) -> None:
        """Make sure every state in `sids` has its row in `trans` (before a vectorized gather).
        `before_row` runs before each row is computed (a deadline check: a row can cost seconds)."""
        missing = sids[~self.has_row.take(sids)]
        if missing.size:
            for sid in np.unique(missing).tolist():
                before_row()
                self.row(sid, before_row)

    def _fill_row(self, sid: int, check: Check = no_check) -> list[int]:
        with self._lock:
            if self.rows[sid] is not None:
                return self.rows[sid]  # type: ignore[return-value]
            term = self.terms[sid]
            try:
                class_of_byte, lowest_bytes = _partition(rx.derivative_classes(term))
                successors = []
                for byte in lowest_bytes:
                    check()
                    successors.append(self.sid(rx.derivative(term, byte), check))
            except RecursionError as exc:
                raise ConstraintLimitError(f"a terminal is nested too deeply to lex: {rx.to_pattern(term)}") from exc
            # The classes partition the bytes: each byte's successor is its class's.
            row = np.asarray(successors, dtype=np.int32)[class_of_byte]
            self.trans[sid] = row
            self.has_row[sid] = True
            self.rows[sid] = row.tolist()
            return self.rows[sid]  # type: ignore[return-value]

    def step(self, sid: int, byte: int) -> int:
        row = self.rows[sid]
        return (row if row is not None else self._fill_row(sid))[byte]

    def accepting_tags(self, sid: int) -> tuple[int, ...]:
        """Tags (terminal term ids) whose lexeme may end in state `sid`."""
        return self._accepting_tags[sid]

    def alive_bytes(self, sid: int) -> list[int]:
        return [b for b, nxt in enumerate(self.row(sid)) if nxt != DEAD]

    def walk_representative(self, sid: int, max_token_len: int) -> int:
        """A state whose walks of tokens up to `max_token_len` bytes equal those from `sid`
        (`byte_regex.clamp_counters`): the states of one bounded string share a single walk."""
        key = (sid, max_token_len)
        found = self._representatives.get(key)
        if found is None:
            found = self._representatives[key] = self.sid(rx.clamp_counters(self.terms[sid], max_token_len))
        return found

    def can_continue(self, sid: int) -> bool:
        """Whether some byte extends the lexeme from `sid` (False: an accepting state is final)."""
        return any(self.row(sid))

    def start_state(self, terms: tuple[rx.Term, ...], check: Check = no_check) -> int:
        """The state that matches any one of `terms`, each tagged with its own term id."""
        return self.sid(rx.alt(*(rx.tag(t.id, t) for t in terms)), check)


@functools.lru_cache(maxsize=4096)
def _partition(classes: tuple[int, ...]) -> tuple[np.ndarray, list[int]]:
    """For `classes` (a partition of the bytes as 256-bit masks): uint8[256], the index of each
    byte's class, and the lowest byte of each class. Cached: states share a few partitions."""
    packed = np.frombuffer(b"".join(bits.to_bytes(32, "little") for bits in classes), dtype=np.uint8)
    members = np.unpackbits(packed.reshape(len(classes), 32), axis=1, bitorder="little")  # [classes, 256]
    return members.argmax(axis=0).astype(np.uint8), [rx.lowest_byte(bits) for bits in classes]


_current = LexerTables()
_current_lock = threading.Lock()


def current_lexer() -> LexerTables:
    """The generation automata built now should use: a fresh one once the current one holds
    NEW_GENERATION_STATES states (the automata on the old one keep it)."""
    global _current
    with _current_lock:
        if _current.num_states >= NEW_GENERATION_STATES:
            _current = LexerTables()
        return _current


def is_empty_language(term: rx.Term, check: Check = no_check) -> bool:
    """Whether `term` provably matches no string (one too big to decide counts as nonempty).

    Raises:
        ConstraintLimitError: from `check`.
    """
    return rx.is_empty(term, check) is True
