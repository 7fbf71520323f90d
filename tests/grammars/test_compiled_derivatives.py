"""The compiled derivatives (`_derivatives.cpp` through `byte_regex.CompiledTerms`) against `byte_regex`.

Hash-consing makes equal derivations the same term, so the compiled path is right when every term it
carries back *is* the term `byte_regex.derivative` builds, and lexer rows filled through it lead to the
same terms as rows filled by `byte_regex` alone. Compared on random walks over the lexer states of
corpus schemas, and on terms with intersections, complements, counters and twins of an older generation.
"""

import contextlib
import json
import math
import random
import sys
from collections.abc import Iterator

import numpy as np
import pytest

import grammars
from grammars.core import byte_regex as rx
from grammars.core import lexer as lexer_module
from grammars.core.budget import no_check
from grammars.core.lexer import DEAD, LexerTables
from grammars.errors import ConstraintLimitError, GrammarError
from tests.shared_data import shared_path

SCHEMAS = [
    {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 12},
            "tags": {"type": "array", "items": {"enum": ["a", "b c", "\u00e9"]}},
            "when": {"type": "string", "format": "date-time"},
        },
        "additionalProperties": {"type": "boolean"},
    },
    {"type": "string", "pattern": "^[a-z]{2,5}-[0-9]+(\\.[0-9]+)?$"},
    {"type": "array", "items": {"type": "string", "minLength": 2, "maxLength": 40, "format": "email"}},
]


def new_store() -> rx.CompiledTerms:
    assert rx.compiled_derivatives is not None, "grammars.core._derivatives is not built: run scripts/install.sh"
    return rx.CompiledTerms(rx.compiled_derivatives.Store())


def test_extension_is_built():
    assert rx.compiled_derivatives is not None, "grammars.core._derivatives is not built: run scripts/install.sh"


def test_missing_extension_is_logged(monkeypatch, caplog):
    monkeypatch.delattr(grammars.core, "_derivatives")
    monkeypatch.setitem(sys.modules, "grammars.core._derivatives", None)  # makes the import fail
    assert rx._load_compiled() is None
    assert "are not built" in caplog.text


@pytest.fixture
def lexer(monkeypatch: pytest.MonkeyPatch) -> LexerTables:
    """A fresh lexer generation (with compiled rows) for the automata built next."""
    assert rx.compiled_derivatives is not None
    rx._new_generation()
    tables = LexerTables()
    monkeypatch.setattr(lexer_module, "_current", tables)
    return tables


@contextlib.contextmanager
def python_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Lexer states and rows derived by `byte_regex` alone within the block."""
    with monkeypatch.context() as patch:
        patch.setattr(rx, "compiled_derivatives", None)
        yield


def start_terms(schema: dict) -> list[rx.Term]:
    """The terms of the schema's first lexer state and of each of its lexemes alone."""
    automaton = grammars.compile(schema, cache=False).automaton
    lexer = automaton.lexer
    first = lexer.terms[automaton.lexer_start(automaton.initial[0])]
    return [first, *(rx.alt(rx.tag(t.id, t)) for t in automaton.parser.lexeme_terms)]


def compare_walks(
    starts: list[rx.Term], walks: int, steps: int, seed: int, monkeypatch: pytest.MonkeyPatch, compiled: LexerTables
) -> int:
    """Walk random live bytes from `starts` in `compiled` and in a lexer filled by `byte_regex`,
    asserting that every row leads to the same terms; the rows compared."""
    reference = LexerTables()
    rng = random.Random(seed)
    compared = 0
    for _ in range(walks):
        term = rng.choice(starts)
        ours = compiled.sid(term)
        with python_only(monkeypatch):
            theirs = reference.sid(term)
        for _ in range(steps):
            if ours == DEAD or theirs == DEAD:
                assert ours == theirs == DEAD
                break
            assert compiled.terms[ours] is reference.terms[theirs]
            assert compiled.accepting[ours] == reference.accepting[theirs]
            assert sorted(compiled.accepting_tags(ours)) == sorted(reference.accepting_tags(theirs))
            row = compiled.row(ours)
            with python_only(monkeypatch):
                expected = reference.row(theirs)
                representative = reference.walk_representative(theirs, 6)
            compared += 1
            assert compiled.terms[compiled.walk_representative(ours, 6)] is reference.terms[representative]
            compare_forms(compiled, ours, reference, theirs, monkeypatch)
            for byte in range(256):
                assert compiled.terms[row[byte]] is reference.terms[expected[byte]], (rx.to_pattern(term), byte)
            live = [byte for byte in range(256) if row[byte] != DEAD]
            if not live:
                break
            byte = rng.choice(live)
            ours, theirs = row[byte], expected[byte]
    return compared


def compare_forms(
    compiled: LexerTables,
    ours: int,
    reference: LexerTables,
    theirs: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The compiled `tag_free_form` of state `ours` pairs the same lexemes with the same tags as the
    Python one of `theirs` (its term), and renaming its tags reaches the same term both ways."""
    form = compiled.tag_free_form(ours)
    with python_only(monkeypatch):
        expected = reference.tag_free_form(theirs)
    if form is None or expected is None:
        assert form is expected is None
        return
    assert -1 <= form.space <= compiled.store_serial and expected.space == -1
    assert sorted(form.tags) == sorted(expected.tags)
    if form.space == -1:  # a term the store cannot hold (a counter past 64 bits): read from the term
        assert form == expected
    elif form.space == compiled.store_serial:  # else its nodes are a replaced store's
        assert compiled._compiled is not None
        lexemes = {tag: compiled._compiled.term(node) for node, tag in zip(form.lexemes, form.tags)}
        assert lexemes == dict(rx.tags_of(reference.terms[theirs]))
    new_tags = tuple(range(1 << 40, (1 << 40) + len(form.tags)))  # fresh tags, one per member
    renamed = compiled.retagged(ours, form.tags, new_tags)
    with python_only(monkeypatch):
        assert compiled.terms[renamed] is reference.terms[reference.retagged(theirs, form.tags, new_tags)]


@pytest.mark.parametrize("schema", SCHEMAS, ids=["object", "pattern", "emails"])
def test_compiled_rows_match_python_rows(schema, lexer, monkeypatch):
    assert compare_walks(start_terms(schema), 30, 40, 14, monkeypatch, lexer) > 200
    assert lexer._compiled is not None and lexer._compiled.store.num_nodes() > 100


@pytest.mark.slow
def test_compiled_rows_match_python_rows_on_corpus(lexer, monkeypatch):
    folder = shared_path("corpus", "schemas", "jsonschemabench")
    paths = sorted(path for group in sorted(folder.iterdir()) if group.is_dir() for path in group.glob("*.json"))
    compared = 0
    for index, path in enumerate(random.Random(14).sample(paths, 24)):
        try:
            starts = start_terms(json.loads(path.read_text())["schema"])
        except GrammarError:
            continue
        compared += compare_walks(starts, 20, 60, index, monkeypatch, lexer)
    assert compared > 2000


def random_term(rng: random.Random, depth: int) -> rx.Term:
    """A term over a few bytes with every kind of node, intersections and complements included."""
    if depth == 0 or rng.random() < 0.2:
        return rng.choice([rx.literal(b"ab"), rx.byte_range(97, 99), rx.byte_set(1 << 98 | 1 << 200), rx.EPSILON])
    kind = rng.randrange(7)
    a, b = random_term(rng, depth - 1), random_term(rng, depth - 1)
    if kind == 0:
        return rx.concat(a, b)
    if kind == 1:
        return rx.alt(a, b)
    if kind == 2:
        lo = rng.randrange(4)
        return rx.repeat(a, lo, rng.choice([None, lo + rng.randrange(3)]))
    if kind == 3:
        return rx.intersect(a, rx.star(b))
    if kind == 4:
        return rx.difference(rx.star(rx.byte_range(97, 100)), a)
    if kind == 5:
        return rx.tag(rng.randrange(1, 5), a)
    return rx.optional(a)


def check_derivatives(terms: list[rx.Term], compiled: rx.CompiledTerms, rng: random.Random) -> None:
    """Derive `terms` a few bytes deep through the store and in Python: the same terms, the same
    emptiness verdicts; each row's states numbered and entered in the books as `Store.fill` documents,
    and a few transitions written first alone (`Store.fill_entries`) the row's, each with its class."""
    room = 4096
    states: dict[int, int] = {0: DEAD}
    node_of_state: dict[int, int] = {}
    terms_of_states: list = [None]  # the per-state books, DEAD's entry first
    rows: list = [None]
    tags_of_states: list = [()]
    accepting = np.zeros(room, dtype=bool)
    trans, has_row = np.zeros((room, 256), dtype=np.int32), np.zeros(room, dtype=bool)
    has_entry = np.zeros((room, 4), dtype=np.uint64)
    books = (states, node_of_state, terms_of_states, rows, tags_of_states, accepting, 1 << 30)
    for term in terms:
        for _ in range(6):
            node = compiled.node(term)
            assert compiled.term(node) is term
            assert compiled.store.is_empty(node, no_check) == rx.search_emptiness(term) == rx.is_empty(term)
            state = compiled.store.state(node, books, no_check)
            if state == DEAD:
                break
            first = len(terms_of_states)
            asked = sorted(rng.sample(range(256), 3))
            entries = [state * 256 + byte for byte in asked]
            assert compiled.store.fill_entries(entries, trans, has_row, has_entry, books, None) == []
            written = np.unpackbits(has_entry[state].view(np.uint8), bitorder="little").astype(bool)
            assert written[asked].all() or has_row[state]
            before = trans[state].copy()
            assert compiled.store.fill([state], trans, has_row, has_entry, books, None) == [] and has_row[state]
            assert (trans[state][written] == before[written]).all()
            for new_state in range(first, len(terms_of_states)):
                successor = node_of_state[new_state]
                assert states[successor] == new_state
                assert (accepting[new_state], tags_of_states[new_state]) == compiled.store.accepting(successor)
            assert len(rows) == len(tags_of_states) == len(terms_of_states) and set(terms_of_states) == {None}
            row = trans[state]
            for byte in (97, 98, 99, 100, 200, 0):
                derivative = rx.derivative(term, byte)
                if row[byte] == DEAD:
                    assert rx.is_empty(derivative) is True, rx.to_pattern(term)
                else:
                    assert compiled.term(node_of_state[int(row[byte])]) is derivative, rx.to_pattern(term)
            term = rx.derivative(term, rng.choice((97, 98, 99, 200)))


def test_compiled_derivatives_of_every_kind_of_term():
    rng = random.Random(3)
    rx._new_generation()
    compiled = new_store()
    check_derivatives([random_term(rng, 4) for _ in range(300)], compiled, rng)


def test_derivatives_of_key_unions_skip_members_by_first_byte_as_python_builds_them():
    """A union of many keys derives only the members a byte can begin (`Node::first`); under a
    complement, where an EMPTY derivative folds to everything, nothing is skipped. The terms built
    are byte_regex's, for bytes that begin some keys, none, or only the complement's."""
    rx._new_generation()
    keys = [b"alpha", b"beta", b"bravo", b"charlie", b"\\u0061b", b"abc", b"b"]
    named = rx.alt(*(rx.literal(key) for key in keys))
    other = rx.intersect(rx.star(rx.byte_range(97, 122)), rx.complement(named))
    term = rx.alt(rx.tag(1, rx.concat(named, rx.literal(b'"'))), rx.tag(2, rx.concat(other, rx.literal(b'"'))))
    check_derivatives([term, named, other, rx.complement(named)], new_store(), random.Random(7))


def test_twins_of_an_older_generation_stay_apart_as_in_python():
    old = rx.alt(rx.concat(rx.literal(b"ab"), rx.star(rx.byte_range(97, 99))), rx.literal(b"b"))
    rx._new_generation()
    twin = rx.alt(rx.concat(rx.literal(b"ab"), rx.star(rx.byte_range(97, 99))), rx.literal(b"b"))
    assert twin is not old
    mixed = rx.alt(rx.tag(1, old), rx.tag(2, twin), rx.concat(old, twin))
    compiled = new_store()
    assert compiled.node(old) != compiled.node(twin)
    check_derivatives([old, twin, mixed], compiled, random.Random(5))


def test_twin_counters_in_one_union_keep_the_current_one_here_and_in_the_store():
    """A counter and its twin of an older generation (one language) meeting in a union leave one
    member, the current generation's, whatever the order of the members (a set's, by address): in
    Python and in C++. Each once kept the first it met, so lexer rows could differ between the two."""
    bodies = [rx.alt(rx.literal(bytes([97 + i % 20, 98])), rx.literal(b"z")) for i in range(40)]
    olds = [rx.star(body) for body in bodies]
    rx._new_generation()
    quote, a = rx.literal(b'"'), rx.literal(b"a")
    starts = []
    for body, old in zip(bodies, olds):
        twin = rx.star(body)
        assert twin is not old and twin.args[0] is old.args[0]
        assert rx.alt(old, twin) is twin and rx.alt(twin, old) is twin
        assert rx.alt(rx.concat(old, quote), rx.concat(twin, quote)) is rx.concat(twin, quote)
        # derived by 'a', each meets its twin: in `old | twin` and in `old" | twin"`
        starts += [
            rx.alt(rx.concat(a, old), rx.concat(a, twin)),
            rx.alt(rx.concat(a, old, quote), rx.concat(a, twin, quote)),
        ]
        assert rx.derivative(starts[-2], 97) is twin
    compiled = new_store()
    for old in olds:  # numbered before their twins in the store, so that order alone would keep them
        compiled.node(old)
    check_derivatives(starts, compiled, random.Random(11))


def test_clamping_returns_at_once_what_holds_no_counter_past_the_limit_and_no_older_term():
    """`Store.clamp` gives back a node without counters past the limit and without composite terms of
    an older generation as it is, nothing built (most lexer states); the others it rebuilds as
    `clamp_counters` does: counters relaxed, older terms made their current twins."""
    older = rx.concat(rx.literal(b"ab"), rx.repeat(rx.byte_range(97, 99), 0, 5))
    rx._new_generation()
    small = rx.concat(rx.literal(b"xy"), rx.repeat(rx.byte_range(97, 99), 2, 5))
    big = rx.concat(rx.literal(b"xy"), rx.repeat(rx.byte_range(97, 99), 0, 500))
    compiled = new_store()
    for term, kept in (
        (small, True),
        (rx.tag(3, small), True),
        (big, False),
        (older, False),
        (rx.alt(small, older), False),
    ):
        node = compiled.node(term)
        before = compiled.store.num_nodes()
        clamped = compiled.store.clamp(node, 6)
        assert (clamped == node and compiled.store.num_nodes() == before) is kept, rx.to_pattern(term)
        assert compiled.term(clamped) is rx.clamp_counters(term, 6), rx.to_pattern(term)


def test_a_store_of_an_older_generation_is_replaced(lexer):
    start = lexer.start_state((rx.concat(rx.literal(b"ab"), rx.star(rx.byte_range(97, 99))),))
    after_a = lexer.row(start)[97]
    stale = lexer._compiled
    assert stale is not None and stale.is_current()
    rx._new_generation()
    assert not stale.is_current()
    row = lexer.row(after_a)
    assert lexer._compiled is not stale
    for byte in (97, 98, 99, 100):
        assert lexer.terms[row[byte]] is rx.derivative(lexer.terms[after_a], byte)


def test_a_full_store_is_compacted_and_its_states_stay_sound(lexer, monkeypatch):
    monkeypatch.setattr(lexer_module, "MAX_COMPILED_NODES", 30)
    replaced = []
    original = LexerTables._store

    def counted(self: LexerTables) -> rx.CompiledTerms | None:
        before = self._compiled
        compiled = original(self)
        if before is not None and compiled is not before:
            replaced.append(None)
        return compiled

    monkeypatch.setattr(LexerTables, "_store", counted)
    assert compare_walks(start_terms(SCHEMAS[0]), 20, 30, 8, monkeypatch, lexer) > 100
    assert len(replaced) > 3


def test_a_full_store_moves_its_states_terms_without_reading_them(lexer, monkeypatch):
    """Compacting a full store moves every state's term to the fresh store in C++: none is read back
    to Python, each state reads back as the derivative it is, a derivative reaching a state's term
    later finds that state (no second state for it), and the next compaction waits until the store
    holds twice what moved."""
    start = lexer.start_state((rx.alt(*(rx.literal(word) for word in (b"abcdabcd", b"badcbadc", b"cdabcdab"))),))
    paths = derived_states(lexer, start, b"abcd", 16)
    unread = {sid for sid in paths if lexer._terms[sid] is None}
    assert len(unread) > 5
    old = lexer._compiled
    monkeypatch.setattr(lexer_module, "MAX_COMPILED_NODES", 1)
    lexer.sid(rx.literal(b"zz"))  # the store is full: compacted
    assert lexer._compiled is not old and lexer._retired is None
    moved = lexer._moved_nodes
    assert 0 < moved <= old.store.num_nodes()
    assert {sid for sid in paths if lexer._terms[sid] is None} == unread  # nothing read back
    lexer.sid(rx.literal(b"yy"))
    assert lexer._compiled.store.num_nodes() > moved  # not compacted again
    monkeypatch.setattr(lexer_module, "MAX_COMPILED_NODES", rx.MAX_INTERNED_TERMS)
    # Fresh rows from the moved states number their successors as the states they were.
    for sid in paths:
        lexer.rows[sid] = None
        lexer.has_row[sid] = False
        lexer.has_entry[sid] = 0
    assert derived_states(lexer, start, b"abcd", 16) == paths
    assert all(lexer.terms[sid] is expected_term(lexer, start, path) for sid, path in paths.items())


def test_carrying_a_term_enters_each_new_subterm_once_and_refuses_what_the_store_cannot_hold():
    """`Store.carry` interns a term's missing subterms in one call, reading their slots: byte sets in each
    64-bit word round trip, every subterm is entered (a second carry adds nothing), and a counter bound
    past 64 bits raises OverflowError (the lexer then derives the term in Python), the store going on as
    it was; what is not a term is a TypeError. A tuple of terms is carried in one call too."""
    rx._new_generation()
    compiled = new_store()
    sets = [rx.byte_range(low, low + 9) for low in (3, 70, 130, 246)] + [rx.byte_range(0, 255)]
    term = rx.alt(rx.concat(rx.alt(*sets), rx.star(sets[2])), rx.tag(7, rx.repeat(sets[3], 2, None)))
    node = compiled.node(term)
    assert compiled.term(node) is term
    assert all(compiled.term(compiled.node(part)) is part for part in sets)
    carried = compiled.store.num_nodes()
    assert compiled.node(term) == node and compiled.store.num_nodes() == carried
    huge = rx.concat(rx.literal(b"ok"), rx.repeat(sets[0], 0, 1 << 70))
    with pytest.raises(OverflowError):
        compiled.node(huge)
    assert compiled.store.num_nodes() == carried
    after = rx.concat(rx.literal(b"ok"), sets[0])
    assert compiled.term(compiled.node(after)) is after
    with pytest.raises(TypeError, match="byte_regex.Term expected"):
        compiled.node(b"ok")  # type: ignore[arg-type]
    # Several terms in one call (a lexeme start's): the nodes one by one, the new ones entered.
    fresh = rx.concat(sets[1], rx.literal(b"new"))
    assert compiled.nodes((term, fresh, after, term)) == [node, compiled.node(fresh), compiled.node(after), node]
    assert compiled.term(compiled.nodes((fresh,))[0]) is fresh and compiled.nodes(()) == []
    with pytest.raises(OverflowError):
        compiled.nodes((after, huge))


@pytest.mark.parametrize("schema", SCHEMAS, ids=["object", "pattern", "emails"])
def test_lexeme_starts_built_in_the_store_are_the_python_unions(schema, lexer, monkeypatch):
    """`start_state` builds a union of tagged lexemes in the store (`Store.start`) without building its
    term: read back, it *is* the union `byte_regex` builds, the state is the one `sid` gives that union
    (on this lexer, and on one filled by `byte_regex` alone), and a second start finds it kept. A
    lexeme the store cannot hold (a counter bound past 64 bits) takes the Python path; `Store.start`
    names its mismatched or unknown arguments."""
    automaton = grammars.compile(schema, cache=False).automaton
    assert automaton.lexer is lexer
    terms = list(automaton.parser.lexeme_terms)
    rng = random.Random(3)
    reference = LexerTables()
    for size in (1, 2, len(terms)):
        chosen = tuple(rng.sample(terms, min(size, len(terms))))
        union = rx.alt(*(rx.tag(t.id, t) for t in chosen))
        before = len(lexer._sid_of_term)
        sid = lexer.start_state(chosen)
        assert len(lexer._sid_of_term) == before, "the union's term was built and numbered in Python"
        assert lexer.terms[sid] is union
        with monkeypatch.context() as patch:  # a second start of the same lexemes is a lookup
            patch.setattr(lexer, "_numbering", None)
            assert lexer.start_state(chosen) == sid == lexer.sid(union)
        with python_only(monkeypatch):
            assert reference.terms[reference.start_state(chosen)] is union
    huge = rx.concat(rx.literal(b"ok"), rx.repeat(rx.byte_range(97, 99), 0, 1 << 70))
    sid = lexer.start_state((terms[0], huge))
    assert lexer.terms[sid] is rx.alt(rx.tag(terms[0].id, terms[0]), rx.tag(huge.id, huge))
    assert lexer._compiled is not None
    store, books = lexer._compiled.store, (lexer._sid_of_node, lexer._node_of_sid, [], [], [], lexer.accepting, 9)
    with pytest.raises(ValueError, match="start: nodes and tags differ"):
        store.start([1, 2], [1], books, None)
    with pytest.raises(IndexError, match="no term node"):
        store.start([store.num_nodes()], [1], books, None)


def test_adopted_nodes_are_the_same_terms_and_only_another_stores():
    """`CompiledTerms.adopt` carries nodes to another store as the same terms (twins of an older
    generation stay themselves); a store does not adopt from itself, nor nodes it lacks."""
    old = rx.concat(rx.literal(b"ab"), rx.star(rx.byte_range(97, 99)))
    rx._new_generation()
    terms = [rx.alt(rx.tag(1, old), rx.tag(2, rx.literal(b"ba"))), rx.derivative(rx.tag(3, old), 97), old]
    source, target = new_store(), new_store()
    nodes = [source.node(term) for term in terms]
    assert [target.term(node) for node in target.adopt(source, nodes)] == terms
    with pytest.raises(ValueError, match="its own nodes"):
        source.store.adopt(source.store, nodes)
    with pytest.raises(IndexError):
        target.store.adopt(source.store, [source.store.num_nodes()])


def test_a_replaced_stores_states_are_read_as_needed_not_at_once(lexer, monkeypatch):
    """Replacing a store of an older generation of terms reads none of its states' terms then: each
    is read when asked for, or one at each later use of the store (`DRAIN_SECONDS` = 0), and the old
    store goes once none is left."""
    monkeypatch.setattr(lexer_module, "DRAIN_SECONDS", 0.0)
    start = lexer.start_state((rx.alt(*(rx.literal(word) for word in (b"abcdabcd", b"badcbadc", b"cdabcdab"))),))
    paths = derived_states(lexer, start, b"abcd", 16)
    unread = {sid for sid in paths if lexer._terms[sid] is None}
    assert len(unread) > 5
    old = lexer._compiled
    rx._new_generation()
    lexer.sid(rx.literal(b"zz"))  # the store is stale: replaced, nothing read
    assert lexer._compiled is not old and lexer._retired is not None
    retired, pending = lexer._retired
    assert retired is old and set(pending) == unread
    asked = min(unread)
    assert lexer.terms[asked] is expected_term(lexer, start, paths[asked])  # read on demand
    assert asked not in lexer._retired[1]
    for count in range(len(unread) - 1):  # each use of the store reads one more
        assert lexer._retired is not None and len(lexer._retired[1]) == len(unread) - 1 - count
        lexer.sid(rx.literal(b"y" * (count + 1)))
    assert lexer._retired is None
    assert all(lexer._terms[sid] is expected_term(lexer, start, paths[sid]) for sid in unread)


def expected_term(lexer: LexerTables, start: int, path: bytes) -> rx.Term:
    """The derivative of state `start`'s term by the bytes `path`."""
    term = lexer.terms[start]
    for byte in path:
        term = rx.derivative(term, byte)
    return term


def derived_states(lexer: LexerTables, start: int, alphabet: bytes, limit: float = math.inf) -> dict[int, bytes]:
    """The states reachable from `start` over `alphabet` (breadth first, about `limit` of them at most),
    with the bytes that first reach each."""
    paths = {start: b""}
    frontier = [start]
    while frontier and len(paths) < limit:
        sid = frontier.pop(0)
        for byte in alphabet:
            following = lexer.row(sid)[byte]
            if following != DEAD and following not in paths:
                paths[following] = paths[sid] + bytes([byte])
                frontier.append(following)
    return paths


@pytest.mark.parametrize("stop", ["check", "states"])
def test_rows_stopped_midway_leave_every_numbered_state_allocated(stop, monkeypatch):
    """A batch of rows (`Store.fill`) that a budget stops midway, by `check` or by the lexer's state
    budget, has had every state it numbered allocated: the numbering names allocated states, and the
    rows computed later are the derivatives'."""
    rx._new_generation()
    words = (b"abcd", b"abce", b"bcda", b"cdab", b"dcba")
    lexer = LexerTables(max_states=12 if stop == "states" else lexer_module.MAX_STATES)
    start = lexer.start_state((rx.alt(*(rx.literal(word) for word in words)),))
    calls = 0

    def stop_after_a_few() -> None:
        nonlocal calls
        calls += 1
        if calls > 6:
            raise ConstraintLimitError("stopped")

    firsts = np.unique([sid for sid in lexer.row(start) if sid != DEAD]).astype(np.int64)
    with pytest.raises(ConstraintLimitError, match="stopped" if stop == "check" else "budget of 12 states"):
        lexer.ensure_rows(firsts, stop_after_a_few if stop == "check" else no_check)
        derived_states(lexer, start, b"abcde")
    assert sorted({sid for sid in lexer._sid_of_node.values() if sid != DEAD}) == list(range(1, lexer.num_states))
    if stop == "states":
        return
    for sid, path in derived_states(lexer, start, b"abcde").items():
        term = lexer.terms[start]
        for byte in path:
            term = rx.derivative(term, byte)
        assert lexer.terms[sid] is term


def test_counters_past_64_bits_fall_back_to_python(lexer, monkeypatch):
    term = rx.concat(rx.repeat(rx.byte_range(97, 98), 1, 2**70), rx.literal(b"!"))
    assert compare_walks([rx.tag(term.id, term)], 5, 20, 1, monkeypatch, lexer) > 20


def test_deep_nesting_is_a_limit_error_on_both_paths(lexer, monkeypatch):
    term = rx.literal(b"a")
    for _ in range(6000):
        term = rx.concat(rx.star(rx.alt(term, rx.literal(b"b"))), rx.literal(b"c"))
    sid = lexer.start_state((term,))
    with pytest.raises(ConstraintLimitError, match="nested too deeply"):
        lexer.row(sid)
    reference = LexerTables()
    with python_only(monkeypatch), pytest.raises(ConstraintLimitError, match="nested too deeply"):
        reference.row(reference.sid(lexer.terms[sid]))


def test_a_check_that_raises_stops_a_row_and_leaves_the_store_sound(lexer, monkeypatch):
    term = rx.alt(*(rx.literal(bytes([97 + i % 26, 48 + i // 26])) for i in range(200)))
    sid = lexer.start_state((term,))
    calls = []

    def check() -> None:
        calls.append(None)
        if len(calls) > 3:
            raise ConstraintLimitError("budget spent")

    with pytest.raises(ConstraintLimitError, match="budget spent"):
        lexer.row(sid, check)
    assert lexer.rows[sid] is None and not lexer.has_row[sid]
    assert compare_walks([lexer.terms[sid]], 10, 5, 2, monkeypatch, lexer) > 10


def emptiness_questions(schema: dict, monkeypatch: pytest.MonkeyPatch) -> list[rx.Term]:
    """The terms compiling `schema` asks `rx.is_empty` about (a fresh generation: none memoized)."""
    asked: list[rx.Term] = []
    original = rx.is_empty

    def recorded(term: rx.Term, check=no_check) -> bool | None:
        asked.append(term)
        return original(term, check)

    rx._new_generation()
    with monkeypatch.context() as patch:
        patch.setattr(rx, "is_empty", recorded)
        try:
            grammars.compile(schema, cache=False)
        except GrammarError:
            pass
    return [term for term in asked if not term.is_plain and not term.nullable]


def handwritten(name: str) -> dict:
    return json.loads(shared_path("corpus", "schemas", "jsonschemabench", "Handwritten", f"{name}.json").read_text())[
        "schema"
    ]


def assert_emptiness_agrees(terms: list[rx.Term]) -> None:
    """The compiled search (through `rx.is_empty`) and `rx.search_emptiness` give the same verdicts."""
    for term in terms:
        rx._EMPTINESS.pop(term.id, None)
        assert rx.is_empty(term) == rx.search_emptiness(term), rx.to_pattern(term)


def test_compiled_emptiness_agrees_with_the_search_on_schema_questions(monkeypatch):
    """Schemas whose compilation asks about intersections (`allOf` of patterns and `oneOf` branches):
    the verdicts that decide which branches a grammar keeps."""
    terms = emptiness_questions(handwritten("allone4"), monkeypatch)
    terms += emptiness_questions(
        {"type": "object", "propertyNames": {"pattern": "^[a-c]{1,3}$", "not": {"enum": ["a", "b"]}}}, monkeypatch
    )
    assert len(terms) > 20
    assert_emptiness_agrees(terms)
    assert {rx.search_emptiness(term) for term in terms} >= {True, False}


@pytest.mark.slow
def test_compiled_emptiness_agrees_with_the_search_on_slow_schemas(monkeypatch):
    """The schemas whose first compile took a second in Python emptiness searches."""
    for name in ("notnames9", "num4", "object10", "allany12"):
        terms = emptiness_questions(handwritten(name), monkeypatch)
        assert terms, name
        assert_emptiness_agrees(terms)


def test_emptiness_without_the_extension_or_past_64_bits_is_searched_in_python(monkeypatch):
    counted = rx.repeat(rx.byte_range(97, 98), 1, 2**70)
    past_64_bits = rx.intersect(counted, rx.complement(rx.literal(b"a")))
    small = rx.intersect(rx.literal(b"ab"), rx.complement(rx.literal(b"ab")))
    assert rx.is_empty(past_64_bits) is False  # `b` is in both
    assert rx.is_empty(small) is True
    monkeypatch.setattr(rx, "compiled_derivatives", None)
    rx._new_generation()
    assert rx.is_empty(rx.intersect(rx.literal(b"ab"), rx.complement(rx.literal(b"ab")))) is True
    assert rx.is_empty(rx.intersect(rx.literal(b"ab"), rx.complement(rx.literal(b"a")))) is False


def test_the_emptiness_store_follows_the_generation_of_terms():
    term = rx.intersect(rx.star(rx.byte_range(97, 98)), rx.complement(rx.star(rx.literal(b"a"))))
    assert rx.is_empty(term) is False
    stale = rx._emptiness_terms
    assert stale is not None and stale.is_current()
    rx._new_generation()
    twin = rx.intersect(rx.star(rx.byte_range(97, 98)), rx.complement(rx.star(rx.literal(b"a"))))
    assert rx.is_empty(rx.intersect(twin, rx.literal(b"aa"))) is True
    assert rx._emptiness_terms is not stale and rx._emptiness_terms.is_current()


def test_filling_single_transitions_names_bad_tables_and_entries():
    """`Store.fill_entries` refuses tables whose sizes disagree (`ValueError`), a negative entry and an
    entry of a state past the tables (`IndexError`), each named, and writes nothing."""
    store = new_store().store
    books = ({}, {}, [], [], [], np.zeros(2, dtype=bool), 10)
    trans, has_row = np.zeros((2, 256), dtype=np.int32), np.zeros(2, dtype=bool)
    with pytest.raises(ValueError, match="has_entry 4 words per has_row entry"):
        store.fill_entries([0], trans, has_row, np.zeros((3, 4), dtype=np.uint64), books, None)
    has_entry = np.zeros((2, 4), dtype=np.uint64)
    with pytest.raises(IndexError, match="a negative item -5"):
        store.fill_entries([-5], trans, has_row, has_entry, books, None)
    with pytest.raises(IndexError, match="no lexer state 7 in the tables"):
        store.fill_entries([7 * 256 + 34], trans, has_row, has_entry, books, None)
    assert not trans.any() and not has_row.any() and not has_entry.any()
