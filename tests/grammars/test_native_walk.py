"""The compiled vocabulary walk (`grammars/masking/_walk_nodes.cpp`) against its numpy reference.

Both walk the same lazy lexer; the compiled one walks the vocabulary's byte trie and has the
transitions it lacks written in place as it meets them (its filler), or, where the filler cannot (a
new state past the tables' room), parks subtrees and resumes them once Python has computed the rows.
So these tests start from fresh lexers with tiny tables (every row missing, the tables reallocated
many times during a walk), and some from fresh lexers with room (every transition written in place).
Its boundary groups hold trie nodes: they are compared as the token rows of those subtrees.
"""

import codecs
import json
import random
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import grammars
from grammars.core import byte_regex as rx
from grammars.core import lexer as lexer_module
from grammars.core.budget import no_check
from grammars.errors import ConstraintLimitError, GrammarError
from grammars.masking import settle as settle_module
from grammars.masking import token_bits, token_walk
from grammars.masking.masks import MaskTable
from grammars.masking.token_walk import RowWalk, TokenTrie, advance_rows_reference, token_trie, walk_nodes
from grammars.masking.vocab import Vocabulary
from tests.shared_data import shared_path

SCHEMAS = {
    "object": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 12},
            "age": {"type": "integer", "minimum": 0},
            "score": {"type": "number"},
            "tags": {"type": "array", "items": {"enum": ["a", "b c", "\u00e9"]}},
            "when": {"type": "string", "format": "date-time"},
        },
        "required": ["name"],
    },
    "pattern": {"type": "string", "pattern": "^[a-z]{2,5}-[0-9]+(\\.[0-9]+)?$"},
}
INSTANCES = {
    "object": {"name": "Ann \u00e9", "age": 31, "score": -1.5e3, "tags": ["a", "b c"], "when": "2020-01-01T00:00:00Z"},
    "pattern": "ab-12.5",
}
#: Walked here besides SCHEMAS: unbounded strings, whose inside takes plain subtrees whole.
FREE_TEXT_SCHEMA = {"type": "array", "items": {"type": "string"}}
FREE_TEXT_INSTANCE = ['Hello, world: "quoted" \u00e9t\u00e9 \\ tab\t', "x"]


def fresh_lexer(monkeypatch: pytest.MonkeyPatch, tiny: bool = True) -> lexer_module.LexerTables:
    """A new lexer generation for automata built next, its tables shrunk to one state (where `tiny`)
    so that walks allocate rows, and grow the tables, as they go."""
    tables = lexer_module.LexerTables()
    if tiny:
        tables.trans, tables.has_row = tables.trans[:1].copy(), tables.has_row[:1]
        tables.has_entry, tables.accepting = tables.has_entry[:1], tables.accepting[:1]
    monkeypatch.setattr(lexer_module, "_current", tables)
    return tables


def count_python_fills(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the calls of the compiled walks' Python `fill` (`token_walk.row_filler`, the compiled
    settle's too) from now on."""
    calls = [0]
    make = token_walk.row_filler

    def counted(lexer, check):
        fill = make(lexer, check)

        def counting(rows, entries):
            calls[0] += 1
            fill(rows, entries)

        return counting

    monkeypatch.setattr(token_walk, "row_filler", counted)
    monkeypatch.setattr(settle_module, "row_filler", counted)
    return calls


def canonical(walk: RowWalk, trie: TokenTrie | None = None) -> tuple[list[int], dict[tuple[int, int], list[int]]]:
    """A walk with its (unspecified) orders sorted away, its groups as rows (from trie nodes, with `trie`)."""
    boundaries: dict[tuple[int, int], list[int]] = {}
    for before, position, members in walk.boundaries:
        rows = members if trie is None else trie.subtree_rows(members)
        boundaries.setdefault((before, position), []).extend(rows.tolist())
    return sorted(walk.inside_rows.tolist()), {key: sorted(rows) for key, rows in boundaries.items()}


def copy_of(vocab: Vocabulary) -> Vocabulary:
    """An equal vocabulary with its own caches (the per-vocabulary walk cache)."""
    return Vocabulary(vocab.token_bytes, vocab.eos_token_ids, size=vocab.size)


def test_extension_is_built():
    assert token_walk.native_walk is not None, "grammars.masking._walk is not built: run scripts/install.sh"


def test_missing_extension_is_logged(monkeypatch, caplog):
    monkeypatch.delattr(grammars.masking, "_walk")
    monkeypatch.setitem(sys.modules, "grammars.masking._walk", None)  # makes the import fail
    assert token_walk._load_native() is None
    assert "is not built" in caplog.text


@pytest.mark.parametrize(
    ("schema", "instance"),
    [(SCHEMAS[name], INSTANCES[name]) for name in sorted(SCHEMAS)] + [(FREE_TEXT_SCHEMA, FREE_TEXT_INSTANCE)],
)
@pytest.mark.parametrize("tiny", [True, False], ids=["tiny tables", "roomy tables"])
def test_walks_match_reference_from_cold_lexer(schema, instance, tiny, vocab, monkeypatch):
    """From every lexer state along a valid instance: whole-vocabulary walks, and walks from the
    middle of tokens (as boundary settling runs them)."""
    assert_walks_match_reference(schema, instance, vocab, monkeypatch, tiny)


@pytest.mark.parametrize(
    ("schema", "instance"),
    [(SCHEMAS[name], INSTANCES[name]) for name in sorted(SCHEMAS)] + [(FREE_TEXT_SCHEMA, FREE_TEXT_INSTANCE)],
)
def test_a_walk_with_room_writes_what_it_lacks_in_place(schema, instance, vocab, monkeypatch):
    """Where the tables have room for every state a walk numbers, the compiled walks from every state
    along an instance have all the transitions and rows they lack written in C++ as they meet them
    (the filler): Python's `fill` is never called, yet rows and single transitions are computed."""
    lexer = fresh_lexer(monkeypatch, tiny=False)
    automaton = grammars.compile(schema, cache=False).automaton
    trie = token_trie(vocab.walk_arrays)
    python_fills = count_python_fills(monkeypatch)
    state = automaton.initial
    for byte in json.dumps(instance).encode():
        sid = automaton.lexer_start(state[0]) if state[1] is None else state[1]
        token_walk._walk_vocabulary(vocab, lexer, sid, no_check)
        walk_nodes(trie, lexer, sid, trie.first_nodes, no_check)
        state = automaton.walk(state, bytes([byte]))
    assert python_fills == [0]
    states = lexer.num_states
    assert lexer.has_row[:states].any() and (lexer.has_entry[:states].any(axis=1) & ~lexer.has_row[:states]).any()


def test_a_cold_walk_computes_only_the_transitions_its_tokens_take(vocab, monkeypatch):
    """The compiled walk asks for single transitions (its filler, or `LexerTables.fill_entries`), each
    written with its derivative class: from every state along an instance, a fresh lexer's walks equal
    those of a lexer whose rows are all computed whole (boundaries compared by the terms of their
    states), numbering fewer states, and leave rows with some transitions written and the rest not."""

    def walks(whole_rows: bool) -> tuple[lexer_module.LexerTables, list]:
        lexer = fresh_lexer(monkeypatch)
        if whole_rows:
            whole = lexer.fill_rows
            monkeypatch.setattr(
                lexer, "fill_entries", lambda entries, check: whole(sorted({e >> 8 for e in entries}), check)
            )
            monkeypatch.setattr(lexer, "walk_filler", lambda check: None)
        automaton = grammars.compile(SCHEMAS["object"], cache=False).automaton
        state, results = automaton.initial, []
        for byte in json.dumps(INSTANCES["object"]).encode():
            sid = automaton.lexer_start(state[0]) if state[1] is None else state[1]
            walk = token_walk._walk_vocabulary(vocab, lexer, sid, no_check)
            groups = sorted(
                (id(lexer.terms[before]), position, sorted(trie.subtree_rows(nodes).tolist()))
                for before, position, nodes in walk.boundaries
            )
            results.append((bytes(walk.inside_bits), groups))
            state = automaton.walk(state, bytes([byte]))
        return lexer, results

    trie = token_trie(vocab.walk_arrays)
    by_entry, entry_walks = walks(whole_rows=False)
    by_row, row_walks = walks(whole_rows=True)
    assert entry_walks == row_walks
    assert by_entry.num_states < by_row.num_states
    partial = by_entry.has_entry[: by_entry.num_states].any(axis=1) & ~by_entry.has_row[: by_entry.num_states]
    assert partial.any() and not by_row.has_entry[: by_row.num_states][~by_row.has_row[: by_row.num_states]].any()


#: Tokens around the UTF-8 text a string's inside takes whole (`utf8_next` in _walk.h): every
#: character width, tokens ending inside a character, and byte sequences no text holds (overlong
#: forms, surrogates, code points past U+10FFFF, stray tails, controls), alone and after text.
UTF8_TOKENS = [
    *(chr(c).encode() for c in range(0x20, 0x7F)),
    *(bytes([b]) for b in range(0x80, 0x100)),
    *(text.encode() for text in ("\u00e9", "\u00e9t\u00e9", "\u20ac", "\u4e2d\u6587", "\U0001f600", "\U0010ffff")),
    *(text.encode() for text in ("\u0080", "\u07ff", "\u0800", "\ud7ff", "\ue000", "\uffff", "\U00010000")),
    *(" " + text for text in ("caf\u00e9", "na\u00efve", "\u00fcber")),
    # truncated characters, after text too; then bytes no text holds; then structure
    *b"\xc3|a\xc3|\xe2\x82|x\xe2\x82|\xf0\x9f\x98|\xc3\xa9\xe2".split(b"|"),
    *b"\xc0\x80|\xc1\xbf|\xe0\x80\x80|\xed\xa0\x80|a\xed\xbf\xbf|\xf4\x90\x80\x80|\xf5\x80".split(b"|"),
    *b'\xc3\xa9\x80|\xc3\xa9"|\xc3\xa9\\|\xc3\xa9\n|\xc3\xa9\x7f|\xc3\xa9",'.split(b"|"),
    *b'"|",|":|\\u00e9|{|}|[|]|,|:| |"\xc3\xa9'.split(b"|"),
]


@pytest.mark.parametrize("tiny", [True, False], ids=["tiny tables", "roomy tables"])
@pytest.mark.parametrize("padding", [0, 5])
def test_walks_over_utf8_text_match_reference(padding, tiny, monkeypatch):
    """On a vocabulary of UTF-8 edge cases, from strings that take any text, only ASCII, at most
    three characters or a few non-ASCII ones: the compiled walk's whole-subtree steps over text agree
    with the numpy walk token by token (masks wider than the tokens too)."""
    schema = {
        "type": "object",
        "properties": {
            "free": {"type": "string"},
            "ascii": {"type": "string", "pattern": "^[ -~]*$"},
            "short": {"type": "string", "maxLength": 3},
            "accents": {"type": "string", "pattern": "^[a-z\u00e9\u00fc\u20ac]*$"},
            "names": {"type": "array", "items": {"enum": ["\u00e9t\u00e9", "caf\u00e9"]}},
        },
    }
    instance = {"free": "\u00e9\u20ac\U0001f600 x", "ascii": "ab c", "short": "\u00e9a", "accents": "\u00e9\u20acb"}
    instance["names"] = ["caf\u00e9"]
    assert assert_walks_match_reference(schema, instance, utf8_vocabulary(padding), monkeypatch, tiny)


def utf8_vocabulary(padding: int = 0) -> Vocabulary:
    """UTF8_TOKENS as a vocabulary, with an end-of-sequence token (and `padding` ids past it, as a
    model whose logits are wider than its tokenizer)."""
    tokens = list(dict.fromkeys(data if isinstance(data, bytes) else data.encode() for data in UTF8_TOKENS))
    return Vocabulary([*tokens, None], [len(tokens)], size=len(tokens) + 1 + padding)


def assert_walks_match_reference(
    schema: dict, instance: object, vocab: Vocabulary, monkeypatch, tiny: bool = True
) -> int:
    """The compiled and numpy walks agree from every lexer state along `instance`, from a fresh lexer
    (with `tiny` tables); returns how many of the whole-vocabulary walks had most tokens inside."""
    lexer = fresh_lexer(monkeypatch, tiny)
    automaton = grammars.compile(schema, cache=False).automaton
    assert automaton.lexer is lexer
    sids = []
    state = automaton.initial
    for byte in json.dumps(instance, ensure_ascii=False).encode():  # raw UTF-8: the text steps see it
        sids.append(automaton.lexer_start(state[0]) if state[1] is None else state[1])
        state = automaton.walk(state, bytes([byte]))
        assert state is not None
    arrays = vocab.walk_arrays
    trie = token_trie(arrays)
    everything = np.arange(len(arrays.ids), dtype=np.int64)
    # Walks from the middle of tokens: every subtree of the trie at depth 3, and its rows from byte 2.
    depth_three = np.flatnonzero(trie.tables[2] == 3).astype(np.int64)
    wide = narrow = 0
    for sid in dict.fromkeys(sids):
        # The trie walk of the whole vocabulary first, while the rows it needs are missing.
        with monkeypatch.context() as patch:
            compiled_walk = token_walk._walk_vocabulary(vocab, lexer, sid, no_check)
            patch.setattr(token_walk, "native_walk", None)
            reference_walk = token_walk._walk_vocabulary(vocab, lexer, sid, no_check)
        assert compiled_walk.inside_bits.dtype == reference_walk.inside_bits.dtype == token_bits.WORD
        assert np.array_equal(compiled_walk.inside_bits, reference_walk.inside_bits)
        # The compiled walk sets the inside tokens of a narrow walk and clears the outside ones of a wide one.
        inside = int(token_bits.to_mask(compiled_walk.inside_bits, vocab.size).sum())
        wide, narrow = wide + (2 * inside > len(arrays.ids)), narrow + (2 * inside <= len(arrays.ids))
        no_rows = np.zeros(0, dtype=np.int64)
        assert canonical(RowWalk(no_rows, compiled_walk.boundaries), trie) == canonical(
            RowWalk(no_rows, reference_walk.boundaries)
        )
        compiled = walk_nodes(trie, lexer, sid, trie.first_nodes, no_check)  # rows missing: parks
        reference = advance_rows_reference(arrays, lexer, sid, everything, 0, no_check)
        assert canonical(compiled, trie) == canonical(reference)
        assert canonical(walk_nodes(trie, lexer, sid, depth_three, no_check), trie) == canonical(
            advance_rows_reference(arrays, lexer, sid, trie.subtree_rows(depth_three), 2, no_check)
        )
    assert narrow, "the instance should lead through walks with few tokens inside"
    return wide


def test_a_walk_run_inside_another_walks_row_callback_walks_alike(vocab, monkeypatch):
    """A compiled walk whose row callback runs another compiled walk on the same thread (a mask asked
    for from a signal handler, say), of another lexer, gets loop answers of its own (`LoopsLease`:
    the other lexer's states are other states under the same numbers): both walks equal the same
    walks run alone, each from a lexer with no rows yet."""
    trie = token_trie(vocab.walk_arrays)

    def string_inside(schema: dict, prefix: bytes) -> tuple[lexer_module.LexerTables, int]:
        lexer = fresh_lexer(monkeypatch)
        automaton = grammars.compile(schema, cache=False).automaton
        state = automaton.walk(automaton.initial, prefix)
        assert state is not None and state[1] is not None
        return lexer, state[1]

    def walk(lexer: lexer_module.LexerTables, sid: int, fill) -> tuple[bytes, list]:  # no filler: `fill` does all
        bits, groups = token_walk.native_walk.walk_vocabulary(
            lexer.tables, fill, None, trie.tables, trie.first_nodes, sid, trie.ordered_ids, trie.row_bits, vocab.size
        )
        return bytes(bits), sorted(
            (position, sorted(trie.subtree_rows(np.frombuffer(members, dtype=np.int64)).tolist()))
            for _, position, members in groups
        )

    outer_schema, outer_prefix = {"type": "array", "items": {"type": "string", "maxLength": 40}}, b'["ab'
    inner_schema, inner_prefix = {"type": "object", "properties": {"name": {"type": "string"}}}, b'{"name": "x'
    alone = [
        walk(lexer, sid, token_walk.row_filler(lexer, no_check))
        for lexer, sid in (string_inside(outer_schema, outer_prefix), string_inside(inner_schema, inner_prefix))
    ]
    inner_lexer, inner_sid = string_inside(inner_schema, inner_prefix)
    outer_lexer, outer_sid = string_inside(outer_schema, outer_prefix)
    inner: list[tuple[bytes, list]] = []

    def fill_walking(rows: list[int], entries: list[int]) -> None:
        if not inner:  # the first callback runs a whole walk of the other lexer first
            inner.append(walk(inner_lexer, inner_sid, token_walk.row_filler(inner_lexer, no_check)))
        token_walk.row_filler(outer_lexer, no_check)(rows, entries)

    assert walk(outer_lexer, outer_sid, fill_walking) == alone[0]
    assert inner == [alone[1]]


def test_a_language_with_two_states_after_a_store_replacement_walks(monkeypatch):
    """After the derivative store is replaced for a new generation of terms, one language can have two
    lexer states: the old one, and the one its derivative in the new store got (a term of the new
    generation). Here the old one is the first state of its tag-free form, as the walk representative
    of a longer-counted state; the new one must walk alike, not through the old one's walk (once, when
    a full store was replaced too, the two were each other's representative and the walk looped).
    Compacting a full store keeps one state per term
    (`test_a_full_store_moves_its_states_terms_without_reading_them`)."""
    lexer = fresh_lexer(monkeypatch)
    vocab = utf8_vocabulary()
    loop = rx.star(rx.literal(b"a"))
    counted = lexer.sid(rx.tag(7, rx.repeat(rx.literal(b"a"), 0, 10 * vocab.walk_arrays.max_len)))
    old_walk = token_walk.walk_state(vocab, lexer, counted, no_check)  # walks its representative, tag(7, a*)
    old = old_walk.sid
    assert old != counted and lexer.terms[old] is rx.tag(7, loop)
    rx._new_generation()
    via_y = lexer.sid(rx.tag(7, rx.concat(rx.literal(b"y"), loop)))
    new = lexer.row(via_y)[ord("y")]  # tag(7, a*) again, numbered afresh in the new store
    assert new != old and rx.to_pattern(lexer.terms[new]) == rx.to_pattern(lexer.terms[old])
    new_walk = token_walk.walk_state(vocab, lexer, new, no_check)
    assert np.array_equal(new_walk.inside_bits, old_walk.inside_bits)


@pytest.mark.parametrize("which", ["runtime", "utf8"])
def test_trie_holds_every_token_under_its_prefix(which, vocab):
    """Each node's subtree holds exactly the tokens that start with its prefix, in byte order, every
    token ends at the node of its whole bytes, and a node is plain (text) below where its subtree's bytes
    are, after it (read from a character boundary there, tokens perhaps ending inside a character)."""
    vocab, every = (vocab, 97) if which == "runtime" else (utf8_vocabulary(), 1)
    arrays = vocab.walk_arrays
    trie = token_trie(arrays)
    node_byte, node_end, node_depth, node_first_token, order, text_below = trie.tables
    plain = np.array([0x20 <= byte < 0x7F and byte not in b'"\\' for byte in range(256)])
    token_bytes = [vocab.token_bytes[token_id] for token_id in arrays.ids.tolist()]
    assert sorted(order.tolist()) == list(range(len(token_bytes)))
    assert [token_bytes[row] for row in order.tolist()] == sorted(token_bytes)
    prefix = [b""]  # by depth, along the preorder
    for node in range(1, node_byte.size):
        depth = int(node_depth[node])
        del prefix[depth:]
        prefix.append(prefix[-1] + bytes([int(node_byte[node])]))
        ending = order[node_first_token[node] : node_first_token[node + 1]].tolist()
        assert all(token_bytes[row] == prefix[-1] for row in ending)
        if node % every == 0:  # whole subtrees, sampled on the runtime's: a full check is quadratic
            below = trie.subtree_rows(np.array([node])).tolist()
            assert sorted(below) == [row for row, data in enumerate(token_bytes) if data.startswith(prefix[-1])]
            assert all(node_depth[n] > depth for n in range(node + 1, int(node_end[node])))
            assert bool(text_below[node] & 1) == plain[node_byte[node + 1 : node_end[node]]].all()
            assert bool(text_below[node] & 2) == all(is_text(token_bytes[row][depth:]) for row in below)


def is_text(data: bytes) -> bool:
    """Whether `data` is plain bytes and well-formed UTF-8 characters, perhaps cut inside its last one."""
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(data, final=False)
    except UnicodeDecodeError:
        return False
    return all(ord(c) >= 0x80 or (0x20 <= ord(c) < 0x7F and c not in '"\\') for c in text)


@pytest.mark.parametrize("tiny", [True, False], ids=["tiny tables", "roomy tables"])
def test_threads_walking_one_fresh_lexer_agree_with_one_thread(tiny, vocab, monkeypatch):
    """Masks made by several threads at once over one fresh lexer, whose walks write transitions in
    place under the lexer's lock (or, with tiny tables, park and have Python grow the tables), equal
    those one thread makes over another fresh lexer."""
    cases = [(SCHEMAS[name], INSTANCES[name]) for name in sorted(SCHEMAS)] + [(FREE_TEXT_SCHEMA, FREE_TEXT_INSTANCE)]

    def masks_along(automaton, instance, table: MaskTable) -> list[bytes]:
        state, found = automaton.initial, []
        for byte in json.dumps(instance).encode():
            found.append(table.allowed(state, no_check).tobytes())
            state = automaton.walk(state, bytes([byte]))
        return found

    def tables() -> list[tuple[object, object, MaskTable]]:
        fresh_lexer(monkeypatch, tiny)
        own = copy_of(vocab)  # its own walk caches
        automata = [grammars.compile(schema, cache=False).automaton for schema, _ in cases]
        return [(a, instance, MaskTable(a, own)) for a, (_, instance) in zip(automata, cases)]

    expected = [masks_along(*arguments) for arguments in tables()]
    with ThreadPoolExecutor(len(cases)) as pool:
        results = list(pool.map(lambda arguments: masks_along(*arguments), tables()))
    assert results == expected


@pytest.mark.parametrize("tiny", [True, False], ids=["tiny tables", "roomy tables"])
def test_budget_stops_compiled_walk(tiny, vocab, monkeypatch):
    """A deadline check that raises stops the walk with its error, whether Python's fill or the
    compiled filler called it."""
    lexer = fresh_lexer(monkeypatch, tiny)
    automaton = grammars.compile(SCHEMAS["object"], cache=False).automaton
    calls = 0

    def check() -> None:
        nonlocal calls
        calls += 1
        if calls > 2:
            raise ConstraintLimitError("out of time")

    sid = automaton.lexer_start(automaton.initial[0])
    trie = token_trie(vocab.walk_arrays)
    python_fills = count_python_fills(monkeypatch)
    with pytest.raises(ConstraintLimitError, match="out of time"):
        walk_nodes(trie, lexer, sid, trie.first_nodes, check)
    assert calls == 3 and (tiny or python_fills == [0])
    # What the walk wrote before it stopped stands: the walk without a deadline equals the reference.
    assert canonical(walk_nodes(trie, lexer, sid, trie.first_nodes, no_check), trie) == canonical(
        advance_rows_reference(vocab.walk_arrays, lexer, sid, np.arange(len(vocab.walk_arrays.ids)), 0, no_check)
    )


@pytest.mark.parametrize("node", [0, -1, "past the end"])
def test_nodes_out_of_range_are_refused(vocab, node):
    lexer = lexer_module.current_lexer()
    trie = token_trie(vocab.walk_arrays)
    node = trie.tables[0].size if node == "past the end" else node
    with pytest.raises(IndexError, match="out of range"):
        walk_nodes(trie, lexer, 0, np.array([node]), no_check)


def corpus_schemas(count: int) -> list[tuple[str, dict]]:
    """A seeded sample of JSONSchemaBench schemas."""
    folder = shared_path("corpus", "schemas", "jsonschemabench")
    paths = sorted(path for group in sorted(folder.iterdir()) if group.is_dir() for path in group.glob("*.json"))
    return [(path.name, json.loads(path.read_text())["schema"]) for path in random.Random(14).sample(paths, count)]


def random_corpus_walks(vocab: Vocabulary, monkeypatch: pytest.MonkeyPatch, *, seed: int, steps: int):
    """(schema name, mask table, state) along random token walks over corpus schemas, each schema's
    from a fresh lexer (short tokens favoured, so walks leave strings and move through the structure).
    A walk moves on by the table's mask after the caller has looked at the state."""
    rng = random.Random(seed)
    short = np.zeros(vocab.size, dtype=bool)
    short[: len(vocab.token_bytes)] = [data is not None and len(data) <= 2 for data in vocab.token_bytes]
    for name, schema in corpus_schemas(24):
        fresh_lexer(monkeypatch)
        try:
            automaton = grammars.compile(schema, cache=False).automaton
        except GrammarError:
            continue
        table = MaskTable(automaton, vocab)
        state = automaton.initial
        for _ in range(steps):
            yield name, table, state
            allowed = table.allowed(state, no_check)
            choices = np.flatnonzero(allowed & short) if rng.random() < 0.6 else np.flatnonzero(allowed)
            choices = [int(t) for t in choices if not table.is_eos(int(t))]
            if not choices:
                break
            state = table.next_state(state, rng.choice(choices))
            assert state is not None


@pytest.mark.slow
def test_masks_match_reference_on_corpus_random_walks(vocab, monkeypatch):
    """Compiled and numpy masks agree state by state along random token walks."""
    reference_vocab = copy_of(vocab)
    references: dict[MaskTable, MaskTable] = {}
    walked = 0
    for name, table, state in random_corpus_walks(copy_of(vocab), monkeypatch, seed=0, steps=30):
        if table not in references:
            references[table] = MaskTable(table.automaton, reference_vocab)
        allowed = table.allowed(state, no_check)
        with monkeypatch.context() as patch:
            patch.setattr(token_walk, "native_walk", None)
            expected = references[table].allowed(state, no_check)
        assert np.array_equal(allowed, expected), (name, state)
        walked += 1
    assert walked > 200


def state_walk_as_rows(walk: token_walk.StateWalk, vocab: Vocabulary) -> tuple[list[int], dict]:
    """A whole-vocabulary walk's inside token ids and its groups as token ids, orders sorted away."""
    inside = np.flatnonzero(token_bits.to_mask(walk.inside_bits, vocab.size))
    trie = token_trie(vocab.walk_arrays)
    groups: dict[tuple[int, int], list[int]] = {}
    for before, position, members in walk.boundaries:
        groups.setdefault((before, position), []).extend(vocab.walk_arrays.ids[trie.subtree_rows(members)].tolist())
    return sorted(inside.tolist()), {key: sorted(ids) for key, ids in groups.items()}


def test_walks_shared_under_other_tags_equal_their_own(vocab, monkeypatch):
    """States whose lexemes differ only in their tags (the rest of a plain string, of one that had
    to begin with `x` and of one that had to be non-empty) share one walk, its groups' states renamed
    (`LexerTables.tag_free_form`): equal to each state's own walk."""
    fresh_lexer(monkeypatch)
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "string"},
            "b": {"type": "string", "pattern": "^x"},
            "c": {"type": "string", "maxLength": 3},
            "e": {"type": "string", "minLength": 1},
        },
    }
    automaton = grammars.compile(schema, cache=False).automaton
    lexer, shared_vocab, own_vocab = automaton.lexer, copy_of(vocab), copy_of(vocab)
    insides = []
    for prefix in (b'{"a": "', b'{"b": "x', b'{"e": "y', b'{"a": "\xc3', b'{"e": "\xc3', b'{"c": "'):
        state = automaton.walk(automaton.initial, prefix)
        assert state is not None and state[1] is not None
        sid = lexer.walk_representative(state[1], vocab.walk_arrays.max_len)
        walk = token_walk.walk_state(shared_vocab, lexer, sid, no_check)
        insides.append(walk.inside_bits)
        own = token_walk._walk_vocabulary(own_vocab, lexer, sid, no_check)
        assert walk.sid == own.sid == sid
        assert state_walk_as_rows(walk, shared_vocab) == state_walk_as_rows(own, own_vocab), prefix
        assert [group[:2] for group in walk.boundaries] == sorted(group[:2] for group in walk.boundaries)
    assert insides[1] is insides[0] and insides[2] is insides[0] and insides[4] is insides[3]
    assert insides[5] is not insides[0]


@pytest.mark.parametrize("native", [True, False], ids=["compiled", "numpy"])
def test_masks_over_walks_shared_under_other_tags_equal_masks_over_their_own(vocab, monkeypatch, native):
    """Masks whose walks are retagged from another state's, with the walks of their boundary groups
    shared under the names of that state's groups (`StateWalk.origins`), equal the masks of the same
    states over their own walks, wherever the string fields end (before a comma, a closing brace)."""
    if not native:
        monkeypatch.setattr(token_walk, "native_walk", None)
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "string"},
            "b": {"type": "string"},
            "n": {"type": "integer"},
            "c": {"type": "array", "items": {"type": "string"}},
        },
    }
    text = b'{"a": "x, y", "b": "", "n": 3, "c": ["p\\"q", "r"]}'
    shared, own = copy_of(vocab), copy_of(vocab)
    fresh_lexer(monkeypatch)
    automaton = grammars.compile(schema, cache=False).automaton
    shared_table, own_table = MaskTable(automaton, shared), MaskTable(automaton, own)
    retagged = []
    original = token_walk._retagged
    monkeypatch.setattr(token_walk, "_retagged", lambda *args: retagged.append(args[1]) or original(*args))
    states = [automaton.initial]
    for index in range(len(text)):
        state = automaton.walk(states[-1], text[index : index + 1])
        assert state is not None
        states.append(state)
    shared_masks = [shared_table.allowed(state, no_check) for state in states]
    assert len(retagged) >= 3
    monkeypatch.setattr(token_walk, "_first_of_form", lambda *args: None)
    for state, mask in zip(states, shared_masks):
        assert np.array_equal(mask, own_table.allowed(state, no_check)), state


@pytest.mark.slow
def test_walks_shared_under_other_tags_equal_their_own_on_corpus_random_walks(vocab, monkeypatch):
    """As above, at every lexer state of random token walks over corpus schemas."""
    own_vocab = copy_of(vocab)
    compared = 0
    for name, table, state in random_corpus_walks(copy_of(vocab), monkeypatch, seed=2, steps=30):
        lexer = table.automaton.lexer
        sid = table.automaton.lexer_start(state[0]) if state[1] is None else state[1]
        sid = lexer.walk_representative(sid, vocab.walk_arrays.max_len)
        if lexer.tag_free_form(sid) is None:
            continue
        walk = token_walk.walk_state(table.vocab, lexer, sid, no_check)
        own = token_walk._walk_vocabulary(own_vocab, lexer, sid, no_check)
        assert state_walk_as_rows(walk, table.vocab) == state_walk_as_rows(own, own_vocab), (name, state)
        compared += 1
    assert compared > 100


def test_walk_cache_is_bounded_in_bytes(vocab, monkeypatch):
    """The per-vocabulary cache of whole-vocabulary walks stays under its byte budget (one walk
    over it is kept alone), and it counts what it holds exactly."""
    vocab = copy_of(vocab)
    budget = 3 * vocab.size
    monkeypatch.setattr(token_walk, "MAX_CACHED_WALK_BYTES", budget)
    automaton = grammars.compile(SCHEMAS["object"], cache=False).automaton
    state, sizes = automaton.initial, []
    for byte in json.dumps(INSTANCES["object"]).encode():
        sid = automaton.lexer_start(state[0]) if state[1] is None else state[1]
        token_walk.walk_state(vocab, automaton.lexer, sid, no_check)
        cache = vocab.__dict__["_state_walks"]
        held = sum(walk.nbytes for walk in cache.values())
        assert held == vocab.__dict__["_state_walk_bytes"]
        assert held <= budget or len(cache) == 1
        sizes.append(len(cache))
        state = automaton.walk(state, bytes([byte]))
        assert state is not None
    assert any(later < earlier for earlier, later in zip(sizes, sizes[1:])), "the budget never evicted"
