"""Lexer rows and derivatives against plain Brzozowski derivatives, byte by byte.

`byte_regex.derivative` dispatches on the term's kind and skips `alt` where at most one member of
a union survives; `LexerTables` derives a row once per derivative class and spreads each class's
successor over its bytes. These tests compare both with a derivative written from the definitions
(with a memo of its own), over the lexer states reachable from the start states of compiled schemas.
"""

import json
import random
from collections import deque

import pytest

import grammars
from grammars.core import byte_regex as rx
from grammars.core.lexer import DEAD, LexerTables
from grammars.errors import GrammarError
from tests.grammars.test_native_walk import SCHEMAS as NATIVE_WALK_SCHEMAS
from tests.shared_data import shared_path

SCHEMAS = [
    {**NATIVE_WALK_SCHEMAS["object"], "additionalProperties": {"type": "boolean"}},
    {"type": "string", "pattern": "^[a-z]{2,5}-[0-9]+(\\.[0-9]+)?$"},
    {"type": "array", "items": {"type": "string", "minLength": 2, "maxLength": 40, "format": "email"}},
]


def plain_derivative(term: rx.Term, byte: int, memo: dict[tuple[int, int], rx.Term]) -> rx.Term:
    """The derivative by its definition, built through the normalizing constructors in the order
    `byte_regex` builds it (so equal derivations are the same term), with a memo of its own and
    none of `byte_regex`'s shortcuts."""
    key = (term.id, byte)
    found = memo.get(key)
    if found is not None:
        return found
    kind, args = term.kind, term.args
    if kind == rx.K_BYTES:
        result = rx.EPSILON if term.bits >> byte & 1 else rx.EMPTY
    elif kind in (rx.K_EMPTY, rx.K_EPS):
        result = rx.EMPTY
    elif kind == rx.K_CONCAT:  # d(h r) = d(h) r | d(r) if h is nullable, flattened along the spine
        branches, rest = [], term
        while rest.kind == rx.K_CONCAT:
            head, rest = rest.args
            branches.append(rx.concat(plain_derivative(head, byte, memo), rest))
            if not head.nullable:
                break
        else:
            branches.append(plain_derivative(rest, byte, memo))
        result = rx.alt(*branches)
    elif kind == rx.K_ALT:
        result = rx.alt(*(plain_derivative(t, byte, memo) for t in args))
    elif kind == rx.K_REPEAT:
        remaining = rx.repeat(args[0], max(term.lo - 1, 0), None if term.hi is None else term.hi - 1)
        result = rx.concat(plain_derivative(args[0], byte, memo), remaining)
    elif kind == rx.K_AND:
        result = rx.intersect(*(plain_derivative(t, byte, memo) for t in args))
    elif kind == rx.K_NOT:
        result = rx.complement(plain_derivative(args[0], byte, memo))
    else:
        result = rx.tag(term.tag, plain_derivative(args[0], byte, memo))
    memo[key] = result
    return result


def start_states(schema: dict, lexer: LexerTables) -> list[int]:
    """The schema's first lexer state, and the start state of each of its lexemes alone."""
    automaton = grammars.compile(schema, cache=False).automaton
    assert automaton.lexer is lexer
    lexemes = [lexer.start_state((term,)) for term in automaton.parser.lexeme_terms]
    return sorted({automaton.lexer_start(automaton.initial[0]), *lexemes} - {DEAD})


def check_rows(lexer: LexerTables, starts: list[int], max_states: int) -> int:
    """Compare the rows of up to `max_states` states reachable from `starts` with plain derivatives
    (by identity: hash-consing makes equal derivations the same term); the states compared."""
    memo: dict[tuple[int, int], rx.Term] = {}
    seen, frontier = set(starts), deque(starts)
    while frontier and len(seen) <= max_states:
        sid = frontier.popleft()
        term = lexer.terms[sid]
        row = lexer.row(sid)
        for byte in range(256):
            expected = plain_derivative(term, byte, memo)
            assert rx.derivative(term, byte) is expected, (rx.to_pattern(term), byte)
            assert row[byte] == lexer.sid(expected), (rx.to_pattern(term), byte)
            if row[byte] != DEAD and row[byte] not in seen:
                seen.add(row[byte])
                frontier.append(row[byte])
    return len(seen)


@pytest.fixture
def lexer(monkeypatch: pytest.MonkeyPatch) -> LexerTables:
    """A fresh lexer generation for the automata built next, after a fresh generation of terms
    (so a generation change mid-test cannot make twins of equal terms)."""
    from grammars.core import lexer as lexer_module

    rx._new_generation()
    tables = LexerTables()
    monkeypatch.setattr(lexer_module, "_current", tables)
    return tables


@pytest.mark.parametrize("schema", SCHEMAS, ids=["object", "pattern", "emails"])
def test_rows_match_plain_derivatives(schema, lexer):
    assert check_rows(lexer, start_states(schema, lexer), max_states=150) > 20


@pytest.mark.skipif(rx.compiled_derivatives is None, reason="the compiled derivatives are not built")
def test_row_tuples_leave_the_collectors_tracking(lexer):
    """A state's row tuple holds ints alone, so `row` takes it out of the collector's tracking when it
    is made: young collections (which fell inside masks) would otherwise visit its 256 items."""
    import gc

    start = start_states(SCHEMAS[0], lexer)[0]
    row = lexer.row(start)
    assert lexer.row(start) is row and any(row)
    assert not gc.is_tracked(row)


@pytest.mark.slow
def test_rows_match_plain_derivatives_on_corpus(lexer):
    folder = shared_path("corpus", "schemas", "jsonschemabench")
    paths = sorted(path for group in sorted(folder.iterdir()) if group.is_dir() for path in group.glob("*.json"))
    compared = 0
    for path in random.Random(15).sample(paths, 10):
        try:
            starts = start_states(json.loads(path.read_text())["schema"], lexer)
        except GrammarError:
            continue
        compared += check_rows(lexer, starts, max_states=120)
    assert compared > 300
