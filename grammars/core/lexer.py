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

Rows are derived by the compiled store of `_derivatives.cpp` (`byte_regex.CompiledTerms`: the same
terms, derived in C++) where it is built, else by `byte_regex` alone. A state reached by compiled
derivatives is numbered by its node and entered in the lexer's books in C++ too, for all the rows a
vocabulary walk lacks at once, written straight to the tables (`Store.fill`, or `Store.fill_entries`
for single transitions: a walk computes only the derivative classes its tokens take, and a
matcher's step only its byte's, so a row stays partial, marked in `has_entry`, until something
needs all of it; rows written whole numbered over twice the states a corpus pass reads; numbering each
successor in Python cost more than deriving it, and entering the new states and rows from Python
took ~4 times what deriving a sparse row does); its term is carried back to Python only when
something reads it (`terms[sid]`), since building Python terms cost most of a row. Either way a
state's term is the one `byte_regex` builds, so both paths reach the same states. A full store is
compacted: the terms of the states move to a fresh store in one compiled call (`_compact`); reading
them back to Python instead took ~1 s for the ~45k states of a lexer that served 50 schemas, and
spread a millisecond at a time over later masks, still a seventh of a corpus run's cold masks. A
store of an older generation of terms is replaced, and the states whose terms are still unread in it
are read from it later (`_drain`: on demand, and a millisecond at a time at each later use of the
store).

Rows live in one numpy table (for the vectorized vocabulary walks in `grammars.masking.token_walk`) mirrored
by Python tuples (for the scalar byte walks of the matcher, where numpy scalar indexing is slow), each made
when first read: most rows serve walks alone, and listing every row cost a twentieth of a cold pass.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple, TypeVar, overload

import numpy as np

from grammars.core import byte_regex as rx
from grammars.core.budget import Check, no_check
from grammars.errors import ConstraintLimitError

if TYPE_CHECKING:
    from grammars.core._derivatives import Store

#: The state with no continuation: the empty language.
DEAD = 0
#: Lexer states one generation may hold (a state costs about 1 KiB of table, plus its row list).
MAX_STATES = 1_000_000
#: States after which automata built later start a new generation.
NEW_GENERATION_STATES = 100_000
#: States a generation's tables have room for from the start. They are allocated zeroed by the system,
#: so a page costs memory only once a row is written to it; growing them (`LexerTables._grow`) copies
#: every row into fresh pages, which took 37, 73 and 83 ms past 16k, 32k and 64k states, each inside the
#: one token mask that crossed the line.
RESERVED_STATES = 1 << 18
#: Term nodes a store of compiled derivatives holds before its lexer compacts it, or twice the nodes the
#: last compaction kept where more (each node and memo entry costs tens of bytes, as in `byte_regex`,
#: whose tables hold as many terms).
MAX_COMPILED_NODES = rx.MAX_INTERNED_TERMS
#: Seconds each use of the store may spend reading the unread terms of the store it replaced (`_drain`).
DRAIN_SECONDS = 0.001
_T = TypeVar("_T")


class TagFreeForm(NamedTuple):
    """A lexer state as its lexemes apart from their tags (`LexerTables.tag_free_form`).

    space: what numbers the lexemes: -1 for `byte_regex` term ids, else the serial of the compiled
        store whose nodes they are (`LexerTables.store_serial`); forms of different spaces never compare.
    lexemes: the id of each of its lexemes (what each tag marks), in order.
    tags: the tag of each, in the same order.
    """

    space: int
    lexemes: tuple[int, ...]
    tags: tuple[int, ...]


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
        #: The term of each state, read as `terms[sid]` (None in `_terms` until then for a state reached by
        #: compiled derivatives: its node is in `_node_of_sid`).
        self.terms = _Terms(self)
        self._terms: list[rx.Term | None] = []
        self._sid_of_term: dict[int, int] = {}
        capacity = min(max_states, RESERVED_STATES)
        self.trans = np.zeros((capacity, 256), dtype=np.int32)  # [states, bytes] -> sid
        self.has_row = np.zeros(capacity, dtype=bool)
        #: The bytes of a row without `has_row` whose successors are in `trans` (bit b % 64 of word b // 64):
        #: the compiled walk has single transitions computed (`fill_entries`).
        self.has_entry = np.zeros((capacity, 4), dtype=np.uint64)
        self.accepting = np.zeros(capacity, dtype=bool)
        #: Each state's row as a tuple, made when a scalar walk first reads it (`_fill_row`) and taken out
        #: of the collector's tracking at once: a list of 256 would be traversed by every full collection
        #: (after 100 schemas: 20k rows, two thirds of the references it visited), and a tuple tracked
        #: until its first collection made each young collection that fell inside a cold pass's masks
        #: visit ~20-40k references (a median ~150 us there; ~45 us with rows untracked at once).
        self.rows: list[tuple[int, ...] | None] = []
        self._accepting_tags: list[tuple[int, ...]] = []
        self._representatives: dict[tuple[int, int], int] = {}
        self._tag_free: dict[int, TagFreeForm | None] = {}
        self._retagged: dict[tuple[int, tuple[int, ...], tuple[int, ...]], int] = {}
        #: `start_state` by the ids of its terms: every schema's lexeme starts go through here, and a
        #: third of a corpus pass's repeat one another schema made (a string value and whitespace, say).
        self._start_of_terms: dict[tuple[int, ...], int] = {}
        #: The compiled derivatives, and the node of each state and state of each node in its store
        #: (replaced together with the generation of terms, compacted once it holds MAX_COMPILED_NODES
        #: and twice the nodes it started with, `_moved_nodes`).
        self._compiled: rx.CompiledTerms | None = None
        self._moved_nodes = 0
        self._sid_of_node: dict[int, int] = {}
        self._node_of_sid: dict[int, int] = {}
        #: The replaced store, and the node there of each state whose term is not read yet (`_drain`).
        self._retired: tuple[rx.CompiledTerms, dict[int, int]] | None = None
        #: Numbers the compiled stores of this generation (`TagFreeForm.space`).
        self._store_serials = itertools.count()
        self.store_serial = -1
        self._add(rx.EMPTY, empty=False)  # DEAD == 0

    # ------------------------------------------------------------------------------------------
    @property
    def num_states(self) -> int:
        return len(self._terms)

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
            compiled = self._store()
            node = None if compiled is None else self._carry(compiled, term)
            if compiled is None or node is None:
                return self._add(term, term is not rx.EMPTY and rx.is_empty(term, check) is True)
            sid = self._sid_of_node.get(node)
            if sid is None:
                sid = self._add(term, compiled.store.is_empty(node, check) is True)
                self._sid_of_node[node] = sid
                if sid != DEAD:
                    self._node_of_sid[sid] = node
            self._sid_of_term[term.id] = sid
            return sid

    def term(self, sid: int) -> rx.Term:
        """The term of state `sid`."""
        term = self._terms[sid]
        if term is None:
            with self._lock:
                term = self._terms[sid]
                if term is None:
                    node = self._node_of_sid.get(sid)
                    if node is not None:
                        assert self._compiled is not None
                        term = self._compiled.term(node)
                    else:  # a state of the replaced store, not read yet
                        assert self._retired is not None
                        retired, unread = self._retired
                        term = retired.term(unread.pop(sid))
                    self._keep_term(sid, term)
        return term

    def _keep_term(self, sid: int, term: rx.Term) -> None:
        """Record the term read back for state `sid` (the caller holds the lock)."""
        self._terms[sid] = term
        self._sid_of_term.setdefault(term.id, sid)

    def _add(self, term: rx.Term, empty: bool) -> int:
        """A new state for `term` (DEAD if `empty`); the caller holds the lock and knows `term` is new."""
        if empty:
            self._sid_of_term[term.id] = DEAD
            return DEAD
        sid = self._allocate(term.nullable, tuple(tag for tag, rest in rx.tags_of(term) if rest.nullable))
        self._terms[sid] = term
        self._sid_of_term[term.id] = sid
        return sid

    def _allocate(self, accepting: bool, accepting_tags: tuple[int, ...]) -> int:
        """A new state (its term and row tuple None yet), as `Books::state_of` in _derivatives.cpp enters
        the states compiled calls number."""
        sid = len(self._terms)
        if sid >= self.max_states:
            raise ConstraintLimitError(f"the lexer exceeded its budget of {self.max_states} states")
        if sid >= len(self.has_row):
            self._grow()
        self._terms.append(None)
        self.rows.append(None)
        self.accepting[sid] = accepting
        self._accepting_tags.append(accepting_tags)
        return sid

    def _grow(self) -> None:
        capacity = 2 * len(self.has_row)
        trans = np.zeros((capacity, 256), dtype=np.int32)
        trans[: len(self.trans)] = self.trans
        has_row = np.zeros(capacity, dtype=bool)
        has_row[: len(self.has_row)] = self.has_row
        has_entry = np.zeros((capacity, 4), dtype=np.uint64)
        has_entry[: len(self.has_entry)] = self.has_entry
        accepting = np.zeros(capacity, dtype=bool)
        accepting[: len(self.accepting)] = self.accepting
        # Readers holding the old arrays still see valid rows for the states they know.
        self.trans, self.has_row, self.has_entry, self.accepting = trans, has_row, has_entry, accepting

    # ---- the compiled store -------------------------------------------------------------------
    def _store(self) -> rx.CompiledTerms | None:
        """The store of compiled derivatives rows come from (None where they are not built); the caller
        holds the lock. A fresh one when the terms start a new generation (the replaced store is kept
        until the terms of its states are read: `_drain`), a compacted one when it is full (`_compact`)."""
        stores = rx.compiled_derivatives
        if stores is None:
            return None
        compiled = self._compiled
        if compiled is None or not compiled.is_current():
            self._drain(None)  # a store replaced before is read out first: at most one is kept
            unread = {sid: node for sid, node in self._node_of_sid.items() if self._terms[sid] is None}
            self._retired = (compiled, unread) if compiled is not None and unread else None
            self._start_store(rx.CompiledTerms(stores.Store()), {})
        elif compiled.store.num_nodes() >= max(MAX_COMPILED_NODES, 2 * self._moved_nodes):
            self._compact(compiled, stores.Store())
        elif self._retired is not None:
            self._drain(DRAIN_SECONDS)
        return self._compiled

    def _compact(self, full: rx.CompiledTerms, fresh: Store) -> None:
        """Replace the full store by `fresh` (empty) holding only the terms of the states, moved in one
        compiled call (`Store.adopt`): every state keeps a node, and no term is read back to Python.
        The next compaction waits until the store holds twice what survived, so moving survivors
        costs no more than building the nodes dropped; the caller holds the lock."""
        sids = list(self._node_of_sid)
        compiled = rx.CompiledTerms(fresh)
        self._start_store(compiled, dict(zip(sids, compiled.adopt(full, [self._node_of_sid[sid] for sid in sids]))))

    def _start_store(self, compiled: rx.CompiledTerms, node_of_sid: dict[int, int]) -> None:
        """Make `compiled` the current store, its nodes of states `node_of_sid` (the caller holds the lock)."""
        self._compiled = compiled
        self.store_serial = next(self._store_serials)
        self._node_of_sid = node_of_sid
        self._sid_of_node = {0: DEAD}
        for sid, node in node_of_sid.items():
            self._sid_of_node.setdefault(node, sid)
        self._moved_nodes = compiled.store.num_nodes()

    def _drain(self, max_seconds: float | None) -> None:
        """Read the terms of the replaced store's unread states (all of them, or for about `max_seconds`,
        one at least), and let the store go once none is left; the caller holds the lock."""
        if self._retired is None:
            return
        retired, unread = self._retired
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        while unread:
            sid, node = unread.popitem()
            if self._terms[sid] is None:
                self._keep_term(sid, retired.term(node))
            if deadline is not None and time.monotonic() > deadline:
                break
        if not unread:
            self._retired = None

    @staticmethod
    def _carry(compiled: rx.CompiledTerms, term: rx.Term) -> int | None:
        """The node of `term`; None for a term the store cannot hold (a counter bound past 64 bits)."""
        nodes = LexerTables._carry_all(compiled, (term,))
        return None if nodes is None else nodes[0]

    @staticmethod
    def _carry_all(compiled: rx.CompiledTerms, terms: tuple[rx.Term, ...]) -> list[int] | None:
        """The nodes of `terms`; None if the store cannot hold one of them."""
        try:
            return compiled.nodes(terms)
        except OverflowError:
            return None

    def _node(self, compiled: rx.CompiledTerms, sid: int) -> int | None:
        """The node of state `sid` in the current store (carried there if it is not yet)."""
        node = self._node_of_sid.get(sid)
        if node is None:
            node = self._carry(compiled, self.term(sid))
            if node is not None:
                self._node_of_sid[sid] = node
                self._sid_of_node.setdefault(node, sid)
        return node

    def _stored(self, sid: int) -> tuple[rx.CompiledTerms, int] | None:
        """The current store and the node of state `sid` there (carried if it is not yet), or None
        where there is no compiled store or it cannot hold the term; the caller holds the lock."""
        compiled = self._store()
        node = None if compiled is None else self._node(compiled, sid)
        return None if compiled is None or node is None else (compiled, node)

    def _state_of_node(self, compiled: rx.CompiledTerms, node: int, check: Check) -> int:
        """The state of a node of the current store, allocated (its term left in the store) on first sight.
        A node already numbered is read from the books here, without the compiled call's set-up."""
        found = self._sid_of_node.get(node)
        return found if found is not None else self._numbering(lambda books: compiled.store.state(node, books, check))

    def _numbering(self, number: Callable[[tuple[object, ...]], _T | None]) -> _T:
        """`number(books)`: a compiled call that numbers nodes of the current store as states, entering
        each new one in the books at once (`Books` in _derivatives.cpp: the node and state dicts, the
        per-state lists and `accepting`). Called again after growing the tables where it ran out of
        room; the caller holds the lock.

        Raises:
            ConstraintLimitError: a new state would pass `max_states`.
        """
        while True:
            result = number(self._books())
            if result is not None:
                return result
            if self.num_states >= self.max_states:
                raise ConstraintLimitError(f"the lexer exceeded its budget of {self.max_states} states")
            self._grow()

    def _books(self) -> tuple[object, ...]:
        """The books compiled calls enter new states in (`Books` in _derivatives.cpp)."""
        return (
            self._sid_of_node,
            self._node_of_sid,
            self._terms,
            self.rows,
            self._accepting_tags,
            self.accepting,
            self.max_states,
        )

    @property
    def lock(self) -> threading.RLock:
        """The lock every change to the tables and books is made under (reentrant)."""
        return self._lock

    def walk_filler(self, check: Check) -> object | None:
        """The capsule through which a compiled vocabulary walk has the transitions it lacks written to
        the tables in place as it meets them (`Store.walk_filler`, `_lexer_filler.h`), or None where the
        derivatives are not compiled. The caller holds `lock` for as long as the walk uses it: it writes to
        the tables and books of now, and the walk drops it once its Python `fill` has run (which may grow
        them)."""
        compiled = self._store()
        if compiled is None:
            return None
        calls = None if check is no_check else check  # None: no Python call per derivative
        return compiled.store.walk_filler(self.trans, self.has_row, self.has_entry, self._books(), calls)

    # ---- rows ---------------------------------------------------------------------------------
    def row(self, sid: int, check: Check = no_check) -> tuple[int, ...]:
        """The successor of `sid` on each of the 256 bytes, computing it on first use.

        Raises:
            ConstraintLimitError: the generation is full, or from `check`.
        """
        row = self.rows[sid]
        if row is None:
            row = self._fill_row(sid, check)
        return row

    def live_bytes(self, sid: int, check: Check = no_check) -> np.ndarray:
        """bool[256]: the bytes that lead `sid` to a live state, read from `trans` (a new lexer state's
        vocabulary walk starts from them: converting its row's tuple took ~5 us of a ~13 us small walk).

        Raises:
            ConstraintLimitError: as `row`.
        """
        return self._trans_row(sid, check) != DEAD

    def tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(trans, has_row, has_entry, accepting) taken together: `_grow` replaces all four, and a walk
        that mixed an old table with a newer `has_row` would read rows past the old table's end."""
        with self._lock:
            return self.trans, self.has_row, self.has_entry, self.accepting

    def ensure_rows(self, sids: np.ndarray, before_row: Callable[[], None]) -> None:
        """Make sure every state in `sids` has its row in `trans` (before a vectorized gather).
        `before_row` runs before each derivative of a row (a deadline check: a row can cost seconds)."""
        missing = sids[~self.has_row.take(sids)]
        if missing.size:
            self.fill_rows(np.unique(missing).tolist(), before_row)

    def _fill_row(self, sid: int, check: Check = no_check) -> tuple[int, ...]:
        """The row of `sid` as a tuple: computed if it is not yet, and copied from `trans` on first use
        (most rows are computed for vocabulary walks, which read `trans` alone)."""
        row = tuple(self._trans_row(sid, check).tolist())
        if rx.untrack is not None:
            rx.untrack(row)  # ints alone: no cycle passes through it
        self.rows[sid] = row
        return row

    def _trans_row(self, sid: int, check: Check) -> np.ndarray:
        """int32[256]: the row of `sid` in `trans`, computed first where it is not yet."""
        if not self.has_row[sid]:
            self.fill_rows([sid], check)
        return self.trans[sid]

    def fill_rows(self, sids: list[int], check: Check) -> None:
        """Compute the rows of `sids` not computed yet: those with a node in the compiled store in
        one call (`Store.fill`), the others by `byte_regex`. A callback of the compiled walk
        (`token_walk.row_filler`), for the rows whose loops it decides."""
        with self._lock:
            compiled = self._store()
            try:
                if compiled is not None:
                    left = self._compiled_rows(compiled, sids, check, whole=True)
                    if left:  # states not carried to the store yet: carried now where it can hold their terms
                        self._compiled_rows(
                            compiled, [sid for sid in left if self._node(compiled, sid) is not None], check, whole=True
                        )
                for sid in sids:
                    if not self.has_row[sid]:
                        self.trans[sid] = self._python_row(self.term(sid), check)
                        self.has_row[sid] = True
            except RecursionError as exc:
                if len(sids) > 1:  # one row at a time, to name the terminal nested too deeply
                    for sid in sids:
                        self.fill_rows([sid], check)
                pattern = rx.to_pattern(self.term(sids[0]))
                raise ConstraintLimitError(f"a terminal is nested too deeply to lex: {pattern}") from exc

    def fill_entries(self, entries: list[int], check: Check) -> None:
        """Compute the transitions `entries` (`sid * 256 + byte`, sorted), each with its byte's
        derivative class (`Store.fill_entries`): the compiled walk's callback for the successors it
        lacks, most of a row being bytes no token takes from there. A state without a node in the
        store gets its whole row (`fill_rows`)."""
        with self._lock:
            compiled = self._store()
            left = None
            if compiled is not None:
                with contextlib.suppress(RecursionError):  # `fill_rows` names the terminal nested too deeply
                    left = self._compiled_rows(compiled, entries, check, whole=False)
            if left is None:
                left = sorted({entry >> 8 for entry in entries})
            if left:
                self.fill_rows(left, check)

    # Both compute one derivative per derivative class: the classes partition the bytes, and each
    # byte's successor is its class's.
    def _compiled_rows(self, compiled: rx.CompiledTerms, asked: list[int], check: Check, whole: bool) -> list[int]:
        """Write the rows of the states `asked` (or with `whole` false, the entries `asked`) whose state
        has a node in the current store and no row yet to the tables, derived and their successors
        numbered in C++ (`Store.fill` or `Store.fill_entries`, through `_numbering`); the states without
        a node are returned."""
        calls = None if check is no_check else check  # None: no Python call per derivative
        fill = compiled.store.fill if whole else compiled.store.fill_entries
        return self._numbering(lambda books: fill(asked, self.trans, self.has_row, self.has_entry, books, calls))

    def _python_row(self, term: rx.Term, check: Check) -> np.ndarray:
        class_of_byte, lowest_bytes = _partition(rx.derivative_classes(term))
        successors = []
        for byte in lowest_bytes:
            check()
            successors.append(self.sid(rx.derivative(term, byte), check))
        return np.asarray(successors, dtype=np.int32)[class_of_byte]

    def step(self, sid: int, byte: int, check: Check = no_check) -> int:
        """The successor of `sid` on `byte`: read from the row tuple once a scalar walk has read the
        whole row, else computed alone with its class (`fill_entries`) where the row is not whole yet:
        a token's path through a lexeme needs one transition of each state, not 256.

        Raises:
            ConstraintLimitError: the generation is full, or from `check`.
        """
        row = self.rows[sid]
        if row is not None:
            return row[byte]
        if self.has_row[sid]:
            return self._fill_row(sid, check)[byte]
        if not (int(self.has_entry[sid, byte >> 6]) >> (byte & 63)) & 1:
            self.fill_entries([sid * 256 + byte], check)
        return int(self.trans[sid, byte])

    def accepting_tags(self, sid: int) -> tuple[int, ...]:
        """Tags (terminal term ids) whose lexeme may end in state `sid`."""
        return self._accepting_tags[sid]

    def walk_representative(self, sid: int, max_token_len: int) -> int:
        """A state whose walks of tokens up to `max_token_len` bytes equal those from `sid`
        (`byte_regex.clamp_counters`): the states of one bounded string share a single walk."""
        key = (sid, max_token_len)
        found = self._representatives.get(key)
        if found is None:
            with self._lock:
                stored = self._stored(sid)
                if stored is not None:
                    compiled, node = stored
                    found = self._state_of_node(compiled, compiled.store.clamp(node, max_token_len), no_check)
                else:
                    found = self.sid(rx.clamp_counters(self.term(sid), max_token_len))
                self._representatives[key] = found
        return found

    def tag_free_form(self, sid: int) -> TagFreeForm | None:
        """`sid` as its lexemes apart from their tags, where it is a union of plain lexemes under
        distinct tags (the inside of a string field, say); None for any other state.

        What a byte does from a state depends on its lexemes' languages alone, so states whose forms
        have equal lexemes (every plain string field of every schema) walk the vocabulary alike, their
        states one to one under `retagged`. Plain lexemes only: their emptiness is decided, so such
        states agree on which successors are dead. Read from the compiled store where the state has a
        node there (its term is not carried back to Python), else from its term; cached per state.
        """
        if sid in self._tag_free:
            return self._tag_free[sid]
        with self._lock:
            stored = self._stored(sid)
            if stored is not None:
                compiled, node = stored
                form = compiled.store.tag_free_form(node)
                found = None if form is None else TagFreeForm(self.store_serial, *form)
            else:
                found = _tag_free_form(self.term(sid))
            self._tag_free[sid] = found
        return found

    def retagged(self, sid: int, tags: tuple[int, ...], new_tags: tuple[int, ...], check: Check = no_check) -> int:
        """The state of `sid` (one reached from a state whose `tag_free_form` has `tags`) with each
        tag `tags[i]` renamed `new_tags[i]`: the state the same bytes reach from the state of the same
        lexemes under `new_tags`. Built in the compiled store where `sid` has a node there.

        Raises:
            ConstraintLimitError: from `check` (a new state's emptiness search).
        """
        key = (sid, tags, new_tags)
        found = self._retagged.get(key)
        if found is None:
            with self._lock:
                stored = self._stored(sid)
                if stored is not None:
                    compiled, node = stored
                    found = self._state_of_node(compiled, compiled.store.retag(node, tags, new_tags), check)
                else:
                    found = self.sid(_retagged_term(self.term(sid), tags, new_tags), check)
                self._retagged[key] = found
        return found

    def can_continue(self, sid: int) -> bool:
        """Whether some byte extends the lexeme from `sid` (False: an accepting state is final)."""
        return any(self.row(sid))

    def start_state(self, terms: tuple[rx.Term, ...], check: Check = no_check) -> int:
        """The state that matches any one of `terms`, each tagged with its own term id.

        Built in the compiled store where it can hold the terms (`Store.start`: the union's term is
        carried back to Python only if something reads it), else by `byte_regex`: the same state either
        way. Building the union as a Python term and carrying it over took about as long as carrying
        the lexemes themselves, and a new schema's first masks build several. Kept per tuple of terms
        for the generation, so another schema's equal lexeme start is a lookup.

        Raises:
            ConstraintLimitError: the generation is full, or from `check` (an emptiness search).
        """
        tags = tuple(term.id for term in terms)
        found = self._start_of_terms.get(tags)
        if found is not None:
            return found
        with self._lock:
            compiled = self._store()
            nodes = None if compiled is None else self._carry_all(compiled, terms)
            if compiled is not None and nodes is not None:
                asked = None if check is no_check else check
                found = self._numbering(lambda books: compiled.store.start(nodes, list(tags), books, asked))
        if found is None:
            found = self.sid(rx.alt(*(rx.tag(t.id, t) for t in terms)), check)
        self._start_of_terms[tags] = found
        return found


def _tag_free_form(term: rx.Term) -> TagFreeForm | None:
    """`LexerTables.tag_free_form` of a state's term (the reference of `Store.tag_free_form`)."""
    members = term.args if term.kind == rx.K_ALT else (term,)
    tags = {member.tag for member in members if member.kind == rx.K_TAG}
    if not term.is_plain or len(tags) != len(members):
        return None
    ordered = sorted(members, key=lambda member: (member.args[0].id, member.tag))
    return TagFreeForm(-1, tuple(member.args[0].id for member in ordered), tuple(member.tag for member in ordered))


def _retagged_term(term: rx.Term, tags: tuple[int, ...], new_tags: tuple[int, ...]) -> rx.Term:
    """`term` (a union of tagged terms) with each tag `tags[i]` renamed `new_tags[i]` (the reference
    of `Store.retag`)."""
    members = term.args if term.kind == rx.K_ALT else (term,)
    renaming = dict(zip(tags, new_tags))
    return rx.alt(
        *(
            rx.tag(renaming[member.tag], member.args[0])
            if member.kind == rx.K_TAG and member.tag in renaming
            else member
            for member in members
        )
    )


class _Terms(Sequence[rx.Term]):
    """`LexerTables.terms`: the term of each state by its id, read through `LexerTables.term`."""

    def __init__(self, lexer: LexerTables) -> None:
        self._lexer = lexer

    def __len__(self) -> int:
        return self._lexer.num_states

    @overload
    def __getitem__(self, sid: int) -> rx.Term: ...
    @overload
    def __getitem__(self, sid: slice) -> list[rx.Term]: ...
    def __getitem__(self, sid: int | slice) -> rx.Term | list[rx.Term]:
        if isinstance(sid, slice):
            return [self._lexer.term(i) for i in range(len(self))[sid]]
        return self._lexer.term(sid)


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
