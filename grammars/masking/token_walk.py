"""What tokens do from a lexer state: over the whole vocabulary, or over a group of its tokens.

From a lexer state, a token either stays inside the current lexeme (the lexer is still alive after
its last byte: allowed whatever the parser says, since the parser allowed every terminal the lexer
state still holds), ends the lexeme at some byte and goes on with a new lexeme (a *boundary* token,
which the parser must settle), or dies. A walk reports boundary tokens grouped by (lexer state
before the ending byte, position): the parser then settles each group once, not each token. The
walk of the whole vocabulary from a lexer state does not depend on the grammar, so it is cached per
(vocabulary, lexer state) and shared by every grammar that reaches the state.

The walks run compiled (`_walk_nodes.cpp`) when the extension is built, which `scripts/install.sh` does:
over the vocabulary's byte trie (`TokenTrie`), where a group's members are trie nodes (each the
subtree of tokens below it), so tokens sharing a prefix share its steps and a group whose next
lexeme cannot take its first byte is dropped a subtree at a time. `advance_rows_reference` is the
numpy walk they must agree with (its members are token rows, one by one), used only when the
extension is missing (the reason is logged at import).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from grammars.core.budget import Check
from grammars.core.lexer import DEAD, LexerTables
from grammars.masking import token_bits
from grammars.masking.vocab import Vocabulary, WalkArrays

logger = logging.getLogger(__name__)

#: Lexer states whose whole-vocabulary walks are kept per vocabulary. A cold pass over 100 corpus
#: schemas walks ~4,000 states and keeps ~5,600 walks (retagged ones too), ~36 MB on SmolLM2's
#: vocabulary: at 4,096 the cache was emptied once in it, and ~150 walks (common string insides
#: among them) were walked again.
MAX_CACHED_WALKS = 16384
#: Bytes those walks may hold per vocabulary (each holds a bit per token, 6 KB on a 49k vocabulary,
#: 32 KB on a 262k one, and its boundary groups), whichever bound comes first.
MAX_CACHED_WALK_BYTES = 256 << 20
#: Walks of boundary groups kept per vocabulary (by `walk_group`, and apart by the compiled settle of
#: `grammars.masking.settle`), and the bytes their rows may hold.
MAX_CACHED_GROUP_WALKS = 65536
MAX_CACHED_GROUP_WALK_BYTES = 128 << 20


@dataclass(frozen=True)
class RowWalk:
    """The fate of a group of tokens from one lexer state.

    inside_rows: tokens (rows of the vocabulary's walk arrays) that end with the lexer still inside
        a live lexeme.
    boundaries: (lexer state before the byte that ends the lexeme, position of that byte, members):
        the group of tokens that end it there, as the walk that found them holds groups (token rows
        for the numpy walk, trie nodes for the compiled one; `advance_group` takes either back).
    """

    inside_rows: np.ndarray
    boundaries: tuple[tuple[int, int, np.ndarray], ...]


@dataclass(frozen=True)
class StateWalk:
    """The whole vocabulary's walk from one lexer state, with the inside tokens as a set of bits.

    sid: the state walked: the walk representative (`LexerTables.walk_representative`) of the states
        that share this walk.
    inside_bits: the tokens that end inside the lexeme, as `token_bits` holds a set (a new mask
        starts as a copy of them).
    inside_of: the state whose walk found these tokens: `sid`, or for a walk retagged from another
        state's (`_retagged`: every string field's inside), that walk's `inside_of`. Walks with equal
        `inside_of` (in one lexer generation) have the same inside tokens and boundary members, so
        what is derived from those alone is shared under it (the walks of boundary groups).
    origins: per boundary group, its `before` state in the walk of `inside_of` (the group's own
        `before` where that walk is this one): `(inside_of, origin, position)` names the group's
        members (`GroupKey`), so the groups of retagged walks share their walks.
    """

    sid: int
    inside_bits: np.ndarray
    boundaries: tuple[tuple[int, int, np.ndarray], ...]
    inside_of: int
    origins: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        """The bytes its arrays hold."""
        return self.inside_bits.nbytes + sum(rows.nbytes for _, _, rows in self.boundaries)


def _load_native() -> ModuleType | None:
    try:
        from grammars.masking import _walk
    except ImportError as exc:
        logger.warning(
            "the compiled vocabulary walk (grammars.masking._walk) is not built (%s): first token masks use "
            "the numpy walk, several times slower; scripts/install.sh builds it",
            exc,
        )
        return None
    return _walk


#: The compiled walk, or None when it is not built (then the walks run `advance_rows_reference`).
native_walk = _load_native()


@dataclass(frozen=True)
class TokenTrie:
    """The vocabulary's tokens as a byte trie, nodes in preorder (`_walk.build_trie`): node 0 is the
    root, a node's children are node + 1 and then each child's `node_end` up to its own, and the
    tokens of its subtree are `order[node_first_token[n]:node_first_token[node_end[n]]]` (rows of
    the walk arrays). `tables` is the tuple the compiled walk reads: (node_byte, node_end,
    node_depth, node_first_token, order, node_text_below), described at `build_trie` in _walk_trie.cpp."""

    tables: tuple[np.ndarray, ...]
    node_end: np.ndarray
    node_first_token: np.ndarray
    order: np.ndarray
    #: The root's children (int64 nodes) and their bytes: where a walk of the whole vocabulary starts.
    first_nodes: np.ndarray
    first_bytes: np.ndarray
    #: int64 token id of each row in trie order (`ids[order]`): a walk's inside ranges read it in order.
    ordered_ids: np.ndarray
    #: The ids of `ordered_ids` as a set of bits (`token_bits`; a wide walk's inside starts from it).
    row_bits: np.ndarray

    def subtree_rows(self, nodes: np.ndarray) -> np.ndarray:
        """int64 rows of the tokens in the subtrees of `nodes` (what a compiled group holds)."""
        if nodes.size == 0:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate(
            [self.order[self.node_first_token[n] : self.node_first_token[self.node_end[n]]] for n in nodes.tolist()]
        )


def token_trie(arrays: WalkArrays) -> TokenTrie:
    """The trie of the tokens in `arrays`, built once (compiled: the extension must be built)."""
    found = arrays.__dict__.get("_token_trie")
    if found is None:
        built = _native().build_trie(*_flat_token_bytes(arrays))
        tables = tuple(
            np.frombuffer(array, dtype=dtype)
            for array, dtype in zip(built, (np.uint8, np.int32, np.int32, np.int32, np.int64, np.uint8))
        )
        node_byte, node_end, _, node_first_token, order, _ = tables
        first_nodes = [1] if node_byte.size > 1 else []
        while first_nodes and node_end[first_nodes[-1]] < node_byte.size:
            first_nodes.append(int(node_end[first_nodes[-1]]))
        nodes = np.array(first_nodes, dtype=np.int64)
        first_bytes = node_byte[nodes].astype(np.int64)
        row_bits = token_bits.from_ids(arrays.ids, arrays.row_of_id.size)
        trie = TokenTrie(tables, node_end, node_first_token, order, nodes, first_bytes, arrays.ids[order], row_bits)
        found = arrays.__dict__.setdefault("_token_trie", trie)
    return found


def advance_group(
    vocab: Vocabulary, lexer: LexerTables, sid: int, members: np.ndarray, position: int, check: Check
) -> RowWalk:
    """Walk the members of a boundary group (as `RowWalk.boundaries` holds them) from lexer state
    `sid`, from their byte at `position` on: the compiled trie walk when the extension is built,
    else the numpy one.

    Raises:
        ConstraintLimitError: `check` stopped the walk (checked before each new lexer row).
    """
    if native_walk is None:
        return advance_rows_reference(vocab.walk_arrays, lexer, sid, members, position, check)
    return walk_nodes(token_trie(vocab.walk_arrays), lexer, sid, members, check)


def walk_nodes(trie: TokenTrie, lexer: LexerTables, sid: int, nodes: np.ndarray, check: Check) -> RowWalk:
    """The compiled walk of the subtrees of trie `nodes` (not the root), each node's byte read from
    lexer state `sid`: `advance_rows_reference` of the tokens in them, from the nodes' position
    (depth - 1) on, with boundary groups as trie nodes.

    Raises:
        ConstraintLimitError: `check` stopped the walk (checked before each new lexer row).
        IndexError: a node is the root or not in the trie.
    """
    nodes = np.ascontiguousarray(nodes, dtype=np.int64)
    with lexer.lock:  # the filler writes the tables of now
        inside, groups = _native().walk_nodes(
            lexer.tables, row_filler(lexer, check), lexer.walk_filler(check), trie.tables, nodes, sid
        )
    return RowWalk(np.frombuffer(inside, dtype=np.int64), _groups(groups))


def _groups(groups: list[tuple[int, int, bytes]]) -> tuple[tuple[int, int, np.ndarray], ...]:
    """The compiled walk's boundary groups, their trie nodes as int64 arrays."""
    return tuple((before, position, np.frombuffer(nodes, dtype=np.int64)) for before, position, nodes in groups)


def _native() -> ModuleType:
    """The compiled walk, which callers have checked is built."""
    if native_walk is None:
        raise RuntimeError("grammars.masking._walk is not built (scripts/install.sh builds it)")
    return native_walk


def row_filler(lexer: LexerTables, check: Check) -> Callable[[list[int], list[int]], None]:
    """The callback through which the compiled walk has the rows and transitions it lacks computed."""

    def fill(rows: list[int], entries: list[int]) -> None:  # each sorted and distinct
        if rows:
            lexer.fill_rows(rows, check)
        if entries:
            lexer.fill_entries(entries, check)

    return fill


def _flat_token_bytes(arrays: WalkArrays) -> tuple[np.ndarray, np.ndarray]:
    """Every token's bytes back to back in row order, and int64 offsets: row r is
    data[starts[r]:starts[r + 1]] (what the trie is built from)."""
    padded = arrays.columns.T  # [num_tokens, max_len]
    data = np.ascontiguousarray(padded[np.arange(arrays.max_len) < arrays.lengths[:, None]])
    starts = np.concatenate(([0], np.cumsum(arrays.lengths, dtype=np.int64)))
    return data, starts


def advance_rows_reference(
    arrays: WalkArrays, lexer: LexerTables, sid: int, rows: np.ndarray, offset: int, check: Check
) -> RowWalk:
    """Walk the token `rows` (each longer than `offset`) from byte `offset` through lexer state `sid`,
    in numpy, byte position by byte position over the tokens still alive: the reference the compiled
    walk is tested against, and the fallback when it is not built.

    A token whose byte at `offset` cannot extend the lexeme is a boundary at `offset` if `sid`
    accepts (the lexeme ends before the token's remaining bytes). Boundary groups hold rows.

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
        # Flat gathers (row * 256 + byte), as in `advance_rows_reference`.
        states[live] = lexer.trans.ravel().take(live_states.astype(np.int64) * 256 + columns[position].take(rows[live]))
    return states


_walk_lock = threading.Lock()


def walk_state(vocab: Vocabulary, lexer: LexerTables, sid: int, check: Check) -> StateWalk:
    """The (cached) walk of every token of `vocab` from lexer state `sid`, skipping tokens whose first
    byte cannot extend the lexeme (callers handle a lexeme that ends before the token).

    Raises:
        ConstraintLimitError: `check` stopped the walk (the walk is not cached then).
    """
    return _walk_of(vocab, lexer, lexer.walk_representative(sid, vocab.walk_arrays.max_len), check, share=True)


def _walk_of(vocab: Vocabulary, lexer: LexerTables, sid: int, check: Check, share: bool) -> StateWalk:
    """`walk_state` of a walk representative: cached, else retagged from the first state of its form
    (where `share`), else walked. The first state's own walk is taken as it stands, neither mapped to
    its representative nor shared again: after the derivative store is replaced (a new generation of
    terms) one language may have two states (the old one, and one its new node got first), and when
    each was the other's first or representative, following both ways again looped for ever."""
    cache: dict[tuple[int, bool, int], StateWalk] = vocab.__dict__.setdefault("_state_walks", {})
    # State ids are per lexer generation; the two walks hold their groups differently.
    key = (lexer.generation, native_walk is None, sid)
    walk = cache.get(key)
    if walk is None:
        shared = _first_of_form(vocab, lexer, sid) if share else None
        if shared is not None:
            first, first_tags, tags = shared
            walk = _retagged(lexer, sid, _walk_of(vocab, lexer, first, check, share=False), first_tags, tags, check)
        with _walk_lock:
            found = cache.get(key)
            if found is not None:
                return found
            if walk is None:
                walk = _walk_vocabulary(vocab, lexer, sid, check)
            _store(vocab, "_state_walk", key, walk, walk.nbytes, MAX_CACHED_WALKS, MAX_CACHED_WALK_BYTES)
    return walk


def _first_of_form(
    vocab: Vocabulary, lexer: LexerTables, sid: int
) -> tuple[int, tuple[int, ...], tuple[int, ...]] | None:
    """The first state the vocabulary met whose `tag_free_form` has the lexemes of `sid`'s, when it is
    another one, with its tags and `sid`'s: its walk is `sid`'s, retagged. None for the first such
    state (which registers itself) and for states without such a form. Bounded like the walks."""
    form = lexer.tag_free_form(sid)
    if form is None:
        return None
    firsts: dict[tuple, tuple[int, tuple[int, ...]]] = vocab.__dict__.setdefault("_tag_free_firsts", {})
    key = (lexer.generation, form.space, form.lexemes)
    found = firsts.get(key)
    if found is None:
        if len(firsts) >= MAX_CACHED_WALKS:
            firsts.clear()
        firsts[key] = (sid, form.tags)
        return None
    return None if found[0] == sid else (found[0], found[1], form.tags)


def _retagged(
    lexer: LexerTables, sid: int, walk: StateWalk, tags: tuple[int, ...], new_tags: tuple[int, ...], check: Check
) -> StateWalk:
    """The walk from `sid` out of `walk`, the walk from the state of the same lexemes under `tags`
    (`new_tags`: `sid`'s): the same tokens, each boundary group's state renamed (`LexerTables.retagged`:
    distinct tags rename states one to one, so groups stay distinct). Its arrays are `walk`'s."""
    renamed: dict[int, int] = {}
    groups = []
    for (before, position, members), origin in zip(walk.boundaries, walk.origins):
        if before not in renamed:
            renamed[before] = lexer.retagged(before, tags, new_tags, check)
        groups.append(((renamed[before], position, members), origin))
    groups.sort(key=lambda group: group[0][:2])
    boundaries = tuple(group for group, _ in groups)
    return StateWalk(sid, walk.inside_bits, boundaries, walk.inside_of, tuple(o for _, o in groups))


#: A boundary group: tokens that end a lexeme in lexer state `before` just before byte `position`.
#: Named by where its members come from, so equal names mean equal members: `(StateWalk.inside_of,
#: origin, position)` for a group of the walk of every token from a lexer state (`StateWalk.origins`),
#: `(parent group, start sid, before, position)` for a group nested in the walk of a parent group's
#: tokens from a lexeme start.
GroupKey = tuple

_group_walk_lock = threading.Lock()


def walk_group(
    vocab: Vocabulary,
    lexer: LexerTables,
    group: GroupKey,
    start: int,
    members: np.ndarray,
    position: int,
    check: Check,
) -> RowWalk:
    """The walk of the `members` of boundary group `group` from lexer state `start` (the lexeme
    that begins at `position`), cached per vocabulary: it depends on lexer states alone, so every
    configuration with that lexeme start, in every grammar of the lexer generation, shares it (the
    separators after a value, say), and settling a group is a lookup after its first time.

    Raises:
        ConstraintLimitError: `check` stopped the walk (nothing is cached then).
    """
    cache: dict[tuple, RowWalk] = vocab.__dict__.setdefault("_group_walks", {})
    key = (lexer.generation, native_walk is None, group, start)
    walk = cache.get(key)
    if walk is None:
        walk = advance_group(vocab, lexer, start, members, position, check)
        size = walk.inside_rows.nbytes + sum(nested.nbytes for _, _, nested in walk.boundaries)
        with _group_walk_lock:
            _store(vocab, "_group_walk", key, walk, size, MAX_CACHED_GROUP_WALKS, MAX_CACHED_GROUP_WALK_BYTES)
    return walk


def _store(
    vocab: Vocabulary, name: str, key: tuple, value: object, size: int, max_entries: int, max_bytes: int
) -> None:
    """Keeps `value` in the vocabulary's cache `<name>s` (its bytes counted in `<name>_bytes`), which is
    emptied first when one more entry or `size` more bytes would pass its bounds (callers hold the
    cache's lock)."""
    cache = vocab.__dict__.setdefault(f"{name}s", {})
    held = vocab.__dict__.get(f"{name}_bytes", 0) + size
    if len(cache) >= max_entries or held > max_bytes:
        cache.clear()
        held = size
    cache[key] = value
    vocab.__dict__[f"{name}_bytes"] = held


def _walk_vocabulary(vocab: Vocabulary, lexer: LexerTables, sid: int, check: Check) -> StateWalk:
    arrays = vocab.walk_arrays
    if native_walk is not None:
        trie = token_trie(arrays)
        with lexer.lock:  # the filler writes the tables of now
            inside, groups = native_walk.walk_vocabulary(
                lexer.tables,
                row_filler(lexer, check),
                lexer.walk_filler(check),
                trie.tables,
                trie.first_nodes,  # the walk keeps those whose byte `sid` takes
                sid,
                trie.ordered_ids,
                trie.row_bits,
                vocab.size,
            )
        boundaries = _groups(groups)
        origins = tuple(before for before, _, _ in boundaries)
        return StateWalk(sid, np.frombuffer(inside, dtype=token_bits.WORD), boundaries, sid, origins)
    extends = lexer.live_bytes(sid, check)
    rows = advance_rows_reference(arrays, lexer, sid, arrays.rows_starting_with(extends), 0, check)
    inside = token_bits.from_ids(arrays.ids[rows.inside_rows], vocab.size)
    origins = tuple(before for before, _, _ in rows.boundaries)
    return StateWalk(sid, inside, rows.boundaries, sid, origins)
