"""The compiled settle of boundary groups (`_walk.settle`, through `GroupSettler.assemble_compiled`)
against its Python reference.

Both settle the boundary groups of the same compiled state walks; the compiled one memoizes the
parser's answers and walks groups in C++, asking Python only on a miss, so these tests also start
from fresh lexers with tiny tables (every row the group walks need is computed during the settle).
"""

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import grammars
from grammars.core.budget import no_check
from grammars.core.lexer import DEAD
from grammars.errors import ConstraintLimitError
from grammars.masking import token_bits, token_walk
from grammars.masking.masks import MaskTable
from grammars.masking.settle import GroupSettler
from grammars.masking.token_walk import StateWalk, walk_state
from tests.grammars.test_native_walk import (
    FREE_TEXT_INSTANCE,
    FREE_TEXT_SCHEMA,
    INSTANCES,
    SCHEMAS,
    copy_of,
    count_python_fills,
    fresh_lexer,
    random_corpus_walks,
)


def settled_both_ways(settler: GroupSettler, state, check=no_check) -> tuple[np.ndarray, np.ndarray]:
    """The mask of `state` assembled from its walk compiled and in Python (the same identity both
    ways, and the walk's bits left as they were)."""
    automaton = settler.automaton
    config, sid = state
    lexer_sid = automaton.lexer_start(config) if sid is None else sid
    walk = walk_state(settler.vocab, automaton.lexer, lexer_sid, no_check)
    inside = walk.inside_bits.copy()
    ending = lexer_sid if sid is not None and automaton.lexer.accepting[lexer_sid] else None
    may_end = automaton.can_end(state)
    compiled = settler.assemble_compiled(walk, config, ending, may_end, check)
    reference = settler.assemble_reference(walk, config, ending, may_end, no_check)
    assert compiled[1] != reference[1] or compiled[0] == reference[0], "equal bits, unequal hashes"
    assert np.array_equal(walk.inside_bits, inside), "the walk's bits changed"
    size = settler.vocab.size
    return token_bits.to_mask(compiled[1], size), token_bits.to_mask(reference[1], size)


def assert_settles_as_reference(settler: GroupSettler, text: bytes) -> None:
    """At every byte of `text` (a sentence of the settler's grammar), at every lexeme boundary along
    it and at its end (where EOS is allowed), the compiled settle gives the reference's mask, and
    some settle adds tokens."""
    automaton = settler.automaton
    state, settled = automaton.initial, 0
    for byte in text:
        states = [state] if state[1] is None else [state, (state[0], None)]
        for at in states:
            compiled, reference = settled_both_ways(settler, at)
            assert np.array_equal(compiled, reference), at
            settled += int(compiled.sum())
        state = automaton.walk(state, bytes([byte]))
        assert state is not None
    assert settled > 0
    assert automaton.can_end(state)
    compiled, reference = settled_both_ways(settler, state)
    assert np.array_equal(compiled, reference) and compiled[list(settler.vocab.eos_token_ids)].all()


@pytest.mark.parametrize(
    ("schema", "instance"),
    [(SCHEMAS[name], INSTANCES[name]) for name in sorted(SCHEMAS)] + [(FREE_TEXT_SCHEMA, FREE_TEXT_INSTANCE)],
)
@pytest.mark.parametrize("tiny", [True, False], ids=["tiny-tables", "roomy-tables"])
def test_compiled_settle_matches_reference_from_cold_lexer(schema, instance, tiny, vocab, monkeypatch):
    """At every byte of a valid instance, and at every lexeme boundary along it: with tiny tables
    the group walks' fillers cannot number new states and Python fills them; with room they do."""
    fresh_lexer(monkeypatch, tiny=tiny)
    automaton = grammars.compile(schema, cache=False).automaton
    settler = GroupSettler(automaton, copy_of(vocab))
    assert_settles_as_reference(settler, json.dumps(instance).encode())


def known_transitions(lexer) -> int:
    """Whole rows and single transitions the lexer's tables mark as written."""
    return int(lexer.has_row.sum()) + int(np.unpackbits(lexer.has_entry.view(np.uint8)).sum())


def test_a_settle_with_room_writes_what_its_group_walks_lack_in_place(vocab, monkeypatch):
    """Where the tables have room, the compiled settle's group walks have the transitions they lack
    written in C++ (a filler per walk, `Store.walk_filler`): along an instance, settles write rows
    and transitions, and Python's `fill` is never called."""
    lexer = fresh_lexer(monkeypatch, tiny=False)
    python_fills = count_python_fills(monkeypatch)
    automaton = grammars.compile(SCHEMAS["object"], cache=False).automaton
    settler = GroupSettler(automaton, copy_of(vocab))
    written = 0
    state = automaton.initial
    for byte in json.dumps(INSTANCES["object"]).encode():
        config, sid = state
        lexer_sid = automaton.lexer_start(config) if sid is None else sid
        walk = walk_state(settler.vocab, lexer, lexer_sid, no_check)
        ending = lexer_sid if sid is not None and lexer.accepting[lexer_sid] else None
        known = known_transitions(lexer)
        settler.assemble_compiled(walk, config, ending, automaton.can_end(state), no_check)
        written += known_transitions(lexer) - known
        state = automaton.walk(state, bytes([byte]))
    assert written > 0, "no settle had a transition to write"
    assert python_fills == [0]


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "reference"])
def test_ending_group_is_the_boundary_mask_of_tokens_that_cannot_extend_the_lexeme(compiled, vocab, monkeypatch):
    """Where a lexeme may end, the ending group settles to exactly the tokens the boundary state (the
    lexeme taken, the next not begun) allows whose first byte cannot extend the lexeme: the join it
    replaced, as an oracle, at every such byte of a valid instance."""
    if not compiled:
        monkeypatch.setattr(token_walk, "native_walk", None)
    automaton = grammars.compile(SCHEMAS["object"], cache=False).automaton
    vocab = copy_of(vocab)
    table, settler = MaskTable(automaton, vocab), GroupSettler(automaton, vocab)
    first_byte = vocab.walk_arrays.first_byte_of_id  # 256 for tokens without bytes
    state, ended_at = automaton.initial, 0
    for byte in json.dumps(INSTANCES["object"]).encode():
        config, sid = state
        if sid is not None and automaton.lexer.accepting[sid]:
            ended = automaton.end_lexeme(config, sid)
            expected = np.zeros(vocab.size, dtype=bool)
            if ended is not None:
                extends = np.append(np.asarray(automaton.lexer.row(sid)) != DEAD, False)
                after = table.allowed((ended, None), no_check)[: first_byte.size]
                expected[: first_byte.size] = after & ~extends[first_byte]
                expected[list(vocab.eos_token_ids)] = False
                ended_at += 1
            walk = walk_state(vocab, automaton.lexer, sid, no_check)
            bare = StateWalk(walk.sid, np.zeros_like(walk.inside_bits), (), walk.inside_of, ())
            _, settled = settler.assemble(bare, config, sid, False, no_check)
            assert np.array_equal(token_bits.to_mask(settled, vocab.size), expected), state
        state = automaton.walk(state, bytes([byte]))
        assert state is not None
    assert ended_at > 10


def test_ending_groups_are_kept_per_vocabulary(vocab):
    """Two schemas' settlers over one vocabulary share the ending group of a lexer state both reach
    (it depends on the state alone): the second is the first's, not computed again."""
    vocab = copy_of(vocab)
    first = grammars.compile(SCHEMAS["object"], cache=False).automaton
    second = grammars.compile({"type": "array", "items": SCHEMAS["object"]}, cache=False).automaton
    assert first.lexer is second.lexer
    state = first.walk(first.initial, b'{"name": "x')
    assert state is not None and state[1] is not None
    sid = state[1]
    made = GroupSettler(first, vocab).ending_group(sid, no_check)
    assert GroupSettler(second, vocab).ending_group(sid, no_check) is made
    assert GroupSettler(second, copy_of(vocab)).ending_group(sid, no_check) is not made


#: Ignored whitespace, and two terminals that accept the same word (`end_lexeme` joins both parses).
AMBIGUOUS_LARK = r"""
start: item ("," item)*
item: NAME "=" value | KEYWORD "!"
value: NAME | NUMBER
NAME: /[a-z]+/
KEYWORD: "stop" | "go"
NUMBER: /[0-9]+/
%ignore " "
"""


@pytest.mark.parametrize("compiled_parser", [True, False], ids=["compiled-parser", "python-parser"])
def test_compiled_settle_runs_the_parser_steps_of_either_parser(compiled_parser, vocab, monkeypatch):
    """The compiled settle runs end_lexeme and lexer_start itself on the parser's steps
    (`Parser.steps`): the compiled configurations' methods, or the Python parser's; with ignored
    terminals and two terminals ending in one lexer state, its masks are the reference's."""
    from grammars.core import parser as parser_module
    from grammars.core.automaton import GrammarAutomaton
    from grammars.frontends.lark.grammar import lark_grammar

    fresh_lexer(monkeypatch)
    if not compiled_parser:
        monkeypatch.setattr(parser_module, "compiled_parser", None)
    automaton = GrammarAutomaton(lark_grammar(AMBIGUOUS_LARK))
    assert automaton.parser.is_compiled == compiled_parser
    settler = GroupSettler(automaton, copy_of(vocab))
    assert_settles_as_reference(settler, b"go!, stop! ,abc = 12,stop=go, x=y")
    assert any(ignored for ignored, _ in automaton._endings.values()), "no ignored terminal ended"
    assert any(len(lexemes) > 1 for _, lexemes in automaton._endings.values()), "no lexer state ended two terminals"


@pytest.mark.parametrize("tiny", [True, False], ids=["tiny-tables", "roomy-tables"])
def test_budget_stops_compiled_settle_and_caches_nothing_half_walked(tiny, vocab, monkeypatch):
    """A deadline raised from a callback stops the settle, after settles without one (whose callbacks
    the settler keeps); settling again gives the full mask. With room, the deadline is checked inside
    a group walk's filler."""
    fresh_lexer(monkeypatch, tiny=tiny)
    automaton = grammars.compile(SCHEMAS["object"], cache=False).automaton
    settler = GroupSettler(automaton, copy_of(vocab))
    compiled, reference = settled_both_ways(settler, automaton.walk(automaton.initial, b"{"))
    assert np.array_equal(compiled, reference)
    state = automaton.walk(automaton.initial, b'{"name": "x')
    assert state is not None
    walk = walk_state(settler.vocab, automaton.lexer, state[1], no_check)
    assert walk.boundaries
    calls = 0

    def check() -> None:
        nonlocal calls
        calls += 1
        raise ConstraintLimitError("out of time")

    with pytest.raises(ConstraintLimitError, match="out of time"):
        settler.assemble_compiled(walk, state[0], None, False, check)
    assert calls == 1
    compiled, reference = settled_both_ways(settler, state)
    assert np.array_equal(compiled, reference)
    assert (compiled & ~token_bits.to_mask(walk.inside_bits, vocab.size)).any(), "the settle added no token"


def test_compiled_settle_refuses_bad_arguments(vocab, monkeypatch):
    automaton = grammars.compile(SCHEMAS["object"], cache=False).automaton
    settler = GroupSettler(automaton, vocab)
    state = automaton.walk(automaton.initial, b'{"name": "x')
    assert state is not None
    walk = walk_state(vocab, automaton.lexer, state[1], no_check)
    as_bools = StateWalk(walk.sid, np.zeros(vocab.size, dtype=bool), walk.boundaries, walk.inside_of, walk.origins)
    with pytest.raises(TypeError, match="inside_bits: expected items of 8 bytes"):
        settler.assemble_compiled(as_bools, state[0], None, False, no_check)
    past_the_bits = GroupSettler(automaton, vocab)
    past_the_bits._eos_ids = (walk.inside_bits.size * 64,)
    with pytest.raises(IndexError, match="EOS id past the mask's bits"):
        past_the_bits.assemble_compiled(walk, state[0], None, True, no_check)
    endings_of = automaton.endings_of
    automaton.endings_of = lambda sid: "no endings"  # type: ignore[method-assign]
    with pytest.raises(TypeError, match="endings_of must return"):
        GroupSettler(automaton, vocab).assemble_compiled(walk, state[0], None, False, no_check)
    automaton.endings_of = endings_of  # type: ignore[method-assign]
    steps = automaton.parser.steps
    monkeypatch.setattr(
        type(automaton.parser), "steps", property(lambda parser: (lambda config, lexeme: -1, *steps[1:]))
    )
    with pytest.raises(ValueError, match="advance returned no state or configuration"):
        GroupSettler(automaton, vocab).assemble_compiled(walk, state[0], None, False, no_check)


def test_group_walk_cache_is_bounded(vocab, monkeypatch):
    """The per-vocabulary compiled cache of group walks is emptied once past its bound, and masks
    stay those of the reference afterwards."""
    monkeypatch.setattr(token_walk, "MAX_CACHED_GROUP_WALKS", 4)
    vocab = copy_of(vocab)
    automaton = grammars.compile(FREE_TEXT_SCHEMA, cache=False).automaton
    settler = GroupSettler(automaton, vocab)
    state, held = automaton.initial, []
    for byte in json.dumps(FREE_TEXT_INSTANCE).encode():
        compiled, reference = settled_both_ways(settler, state)
        assert np.array_equal(compiled, reference)
        held.append(token_walk.native_walk.group_walks_held(vocab.__dict__["_compiled_group_walks"])[0])
        state = automaton.walk(state, bytes([byte]))
        assert state is not None
    assert max(held) > 4
    assert any(later < earlier for earlier, later in zip(held, held[1:])), "the bound never emptied the cache"


def test_mask_table_settles_compiled_where_the_walk_is(vocab, monkeypatch):
    """`assemble` takes the compiled settle with the compiled walk, the reference without it."""
    automaton = grammars.compile(SCHEMAS["object"], cache=False).automaton
    used = []
    for how in ("compiled", "reference"):
        method = getattr(GroupSettler, f"assemble_{how}")
        monkeypatch.setattr(
            GroupSettler, f"assemble_{how}", lambda *args, how=how, method=method: used.append(how) or method(*args)
        )
    state = automaton.walk(automaton.initial, b'{"name": "x')
    MaskTable(automaton, copy_of(vocab)).allowed(state, no_check)
    monkeypatch.setattr(token_walk, "native_walk", None)
    MaskTable(automaton, copy_of(vocab)).allowed(state, no_check)
    assert used == ["compiled", "reference"]


@pytest.mark.slow
def test_compiled_settle_matches_reference_on_corpus_random_walks(vocab, monkeypatch):
    """Along random token walks over corpus schemas, from fresh lexers."""
    settlers: dict[MaskTable, GroupSettler] = {}
    walked = 0
    for name, table, state in random_corpus_walks(copy_of(vocab), monkeypatch, seed=1, steps=40):
        if table not in settlers:
            settlers[table] = GroupSettler(table.automaton, table.vocab)
        compiled, reference = settled_both_ways(settlers[table], state)
        assert np.array_equal(compiled, reference), (name, state)
        walked += 1
    assert walked > 300


def test_threads_settling_on_one_vocabulary_agree_with_one_thread(vocab):
    """Tables of two grammars settle concurrently through the vocabulary's one compiled cache."""
    shared, alone = copy_of(vocab), copy_of(vocab)
    cases = [(SCHEMAS[name], INSTANCES[name]) for name in sorted(SCHEMAS)] + [(FREE_TEXT_SCHEMA, FREE_TEXT_INSTANCE)]
    automata = [grammars.compile(schema, cache=False).automaton for schema, _ in cases]

    def masks_along(automaton, instance, table: MaskTable) -> list[np.ndarray]:
        state, found = automaton.initial, []
        for byte in json.dumps(instance).encode():
            found.append(table.allowed(state, no_check).copy())
            state = automaton.walk(state, bytes([byte]))
        return found

    expected = [masks_along(a, instance, MaskTable(a, alone)) for a, (_, instance) in zip(automata, cases)]
    with ThreadPoolExecutor(len(cases)) as pool:
        futures = [
            pool.submit(masks_along, a, instance, MaskTable(a, shared)) for a, (_, instance) in zip(automata, cases)
        ]
        results = [future.result() for future in futures]
    for got, want in zip(results, expected):
        assert len(got) == len(want) and all(np.array_equal(g, w) for g, w in zip(got, want))
