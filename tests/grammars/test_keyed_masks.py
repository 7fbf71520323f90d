"""Distinct-key masks (`MaskTable.allowed_with_keys`) against the brute force, the batched checks
(`distinct_keys.refusals`) against the one-by-one reference (`refuses`), and the key-overlap
shortcuts (`distinct_keys.overlapping_keys`) against the search they stand in for.

A keyed mask walks only a few candidate tokens one by one; the brute force walks every token of
the plain mask that holds a quote or a comma with `walk_keyed` (what advancing does), so the two
must agree at every step of random walks over schemas with declared, pattern and additional keys.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

import grammars
from grammars.core import byte_regex as rx
from grammars.core import distinct_keys
from grammars.core.budget import no_check
from grammars.core.distinct_keys import (
    _ASK,
    _AWAIT,
    _KEY,
    _KEY_NEXT,
    _PASS,
    _REFUSE,
    _STRING,
    _VALUE,
    Keys,
    _decoded,
    _may_spell_seen,
    _shares_string,
    key_spellings,
    may_need_check,
    overlapping_keys,
    refusals,
    refuses,
    scan,
    walk_keyed,
)
from grammars.frontends.json_schema.strings import other_than, string_lexeme, value_encodings
from tests.grammars.test_native_walk import copy_of
from tests.shared_data import shared_path

DECLARED_AND_MORE = {
    "type": "object",
    "properties": {"id": {"type": "integer"}, "name": {"type": "string"}, "n": {"type": "integer"}},
    "required": ["id"],
    "additionalProperties": {"type": "integer"},
}
PATTERN_KEYS = {
    "type": "object",
    "patternProperties": {"^x[0-2]$": {"type": "integer"}, "^y$": {"type": "string"}},
    "additionalProperties": False,
}
#: Few keys, so that walks run out of fresh ones: then a comma is refused.
ENUM_KEYS = {"type": "object", "propertyNames": {"enum": ["a", "b", "ab"]}, "additionalProperties": {"type": "integer"}}
#: Object alternatives that name the same keys in other orders, one of them closed.
ALTERNATIVES = {
    "anyOf": [
        {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string"}}},
        {
            "type": "object",
            "properties": {"b": {"type": "integer"}, "a": {"type": "string"}},
            "additionalProperties": False,
        },
    ]
}
#: Named keys that need escapes or several UTF-8 bytes, and any further keys.
ESCAPED_NAMES = {
    "type": "object",
    "properties": {'q"': {"type": "integer"}, "\u00e9t\u00e9": {"type": "integer"}, "a/b": {"type": "string"}},
}
NESTED = {
    "type": "object",
    "properties": {"a": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "integer"}}}},
    "additionalProperties": {"type": "object", "additionalProperties": {"type": "string"}},
}


def keyed_walk_agrees(constraint: grammars.Constraint, vocab, seed: int, max_tokens: int) -> int:
    """Walk `constraint` with tokens drawn at random (favouring quotes and commas); at each step
    compare the keyed mask with the brute force. Returns how many tokens of plain masks were refused."""
    table = constraint.matcher(vocab)._table
    automaton = table.automaton
    token_bytes = vocab.token_bytes
    keyish = np.array([bool(data) and (b'"' in data or b"," in data) for data in token_bytes], dtype=bool)
    eos = np.zeros(vocab.size, dtype=bool)
    eos[list(vocab.eos_token_ids)] = True
    rng = random.Random(seed)
    state, keys = automaton.initial, automaton.initial_keys
    refused = 0
    for _ in range(max_tokens):
        plain = table.allowed(state, no_check)
        if keys is not None and keys.has_seen_keys:
            keyed = table.allowed_with_keys(state, keys, no_check)
            brute = plain.copy()
            walked_ids = np.flatnonzero(plain & keyish).tolist()
            for token_id in walked_ids:
                brute[token_id] = walk_keyed(automaton, state, keys, token_bytes[token_id]) is not None
            assert np.array_equal(keyed, brute), [token_bytes[t] for t in np.flatnonzero(keyed != brute)]
            tokens = [token_bytes[t] for t in walked_ids]
            one_by_one = [i for i, data in enumerate(tokens) if refuses(automaton, state, keys, data)]
            assert refusals(automaton, state, keys, tokens) == one_by_one
            refused += int((plain & ~brute).sum())
            allowed = keyed
        else:
            allowed = plain
        choices = np.flatnonzero(allowed & ~eos)
        if not choices.size:
            break
        favoured = np.flatnonzero(allowed & ~eos & keyish)
        pool = favoured if favoured.size and rng.random() < 0.6 else choices
        chosen = int(pool[rng.randrange(pool.size)])
        walked = walk_keyed(automaton, state, keys, token_bytes[chosen]) if keys is not None else None
        if keys is None:
            nxt = automaton.walk(state, token_bytes[chosen])
            assert nxt is not None
            state = nxt
        else:
            assert walked is not None
            state, keys = walked
    return refused


@pytest.mark.parametrize(
    ("spec", "options", "runs_out_of_keys"),
    [
        (DECLARED_AND_MORE, {}, False),
        (PATTERN_KEYS, {}, True),
        (ENUM_KEYS, {}, True),
        (ENUM_KEYS, {"whitespace": "compact"}, True),
        (NESTED, {}, False),
        (ALTERNATIVES, {}, False),
        (ESCAPED_NAMES, {"whitespace": "compact"}, False),
    ],
    ids=["declared", "pattern", "enum", "enum-compact", "nested", "alternatives", "escaped-names"],
)
def test_keyed_masks_equal_the_brute_force(spec, options: dict, runs_out_of_keys: bool, vocab) -> None:
    """Where keys never run out (`keys_may_run_out` False), the masks check only the keys tokens
    close; the brute force and `refuses` run every check, so these walks test that shortcut too."""
    constraint = grammars.compile(spec, cache=False, **options)
    assert constraint.automaton.keys_may_run_out == runs_out_of_keys
    refused = sum(keyed_walk_agrees(constraint, vocab, seed, 40) for seed in range(6))
    if runs_out_of_keys:  # the walks reach objects whose keys are all taken: a comma is refused there
        assert refused > 0


@pytest.mark.parametrize("spec", [PATTERN_KEYS, NESTED], ids=["pattern", "nested"])
def test_keyed_masks_equal_the_brute_force_with_the_numpy_walk(spec, vocab, monkeypatch) -> None:
    """Without the compiled extension the candidates a keyed mask checks are gathered by numpy."""
    from grammars.masking import masks, token_walk

    monkeypatch.setattr(token_walk, "native_walk", None)
    gathered: list[list[int]] = []
    gather = masks._walked_suspects
    monkeypatch.setattr(masks, "_walked_suspects", lambda *args: gathered.append(gather(*args)) or gathered[-1])
    for seed in (1, 2):
        keyed_walk_agrees(grammars.compile(spec, cache=False), copy_of(vocab), seed, 40)
    assert any(gathered), "no candidate was allowed: nothing was checked"


@pytest.mark.parametrize("spec", [PATTERN_KEYS, ENUM_KEYS, NESTED], ids=["pattern", "enum", "nested"])
def test_keyed_masks_equal_the_brute_force_without_the_compiled_classifier(spec, vocab, monkeypatch) -> None:
    """Without the compiled classifier `scan` reads every candidate token (the reference path)."""
    monkeypatch.setattr(distinct_keys, "compiled_keys", None)
    scanned = []
    monkeypatch.setattr(distinct_keys, "scan", lambda *args: scanned.append(args[1]) or scan(*args))
    for seed in (1, 2):
        keyed_walk_agrees(grammars.compile(spec, cache=False), vocab, seed, 40)
    assert scanned


@pytest.mark.slow
def test_keyed_masks_equal_the_brute_force_on_corpus_schemas(vocab) -> None:
    """Random walks over corpus schemas with objects (walk the external corpus: slow)."""
    folder = shared_path("corpus", "schemas", "jsonschemabench")
    rng = random.Random(7)
    paths = sorted(folder.rglob("*.json"))
    rng.shuffle(paths)
    tested = 0
    for path in paths:
        schema = json.loads(path.read_text()).get("schema")
        if not isinstance(schema, dict) or "properties" not in json.dumps(schema):
            continue
        try:
            constraint = grammars.compile(schema, cache=False)
        except grammars.GrammarError:
            continue
        keyed_walk_agrees(constraint, vocab, tested, 30)
        tested += 1
        if tested == 12:
            break
    assert tested == 12


NAMES = ["a", "id", "name", "\u00e9t\u00e9", 'q"', "", "a/b", "\U0001f600", "x1"]


@pytest.mark.parametrize("seen", [frozenset(NAMES[:3]), frozenset(NAMES[3:6]), frozenset(NAMES[6:]), frozenset(NAMES)])
def test_overlapping_keys_agree_with_the_search(seen: frozenset[str]) -> None:
    """Literal keys (canonical and escaped spellings, and literals that are no key) and "every key
    but these" lexemes are decided without a search: the answers must be the search's."""
    lexemes = [
        rx.literal(b'"id"'),
        rx.literal(b'"\\u0069d"'),
        rx.literal(b'"n\\u0061me"'),
        rx.literal(b'""'),
        rx.literal(b'"a\\/b"'),
        rx.literal(b'"\\ud83d\\ude00"'),
        rx.literal(b'"name":'),
        rx.literal(b"id"),
        rx.literal('"\u00e9t\u00e9"'.encode()),
        string_lexeme(other_than(frozenset(["id", "x1"]))),
        string_lexeme(other_than(frozenset())),
        string_lexeme(rx.concat(rx.literal(b"q"), rx.ANYTHING)),
        string_lexeme(value_encodings("a")),
    ]
    for lexeme in lexemes:
        expected = {
            name
            for name in seen
            if (spellings := key_spellings(name)) is not None and rx.shares_string(lexeme, spellings)
        }
        assert overlapping_keys(lexeme, seen) == expected, lexeme


def test_compiled_key_overlap_agrees_with_the_python_search() -> None:
    """Which key spellings a lexeme shares is decided by the compiled emptiness search of their
    intersection where it is built: its answers are the Python search's (`rx.shares_string`)."""
    assert rx.compiled_derivatives is not None, "grammars.core._derivatives is not built"
    many = frozenset(f"k{i}" for i in range(300)) | {"id"}
    lexemes = [
        string_lexeme(other_than(many)),
        string_lexeme(rx.complement(rx.alt(value_encodings("name"), value_encodings("id")))),
        string_lexeme(rx.concat(rx.literal(b"a"), rx.ANYTHING)),
        string_lexeme(rx.repeat(rx.byte_range(ord("a"), ord("z")), 1, 3)),
        rx.concat(string_lexeme(value_encodings("a/b")), rx.optional(rx.literal(b" "))),
        string_lexeme(value_encodings("\u00e9t\u00e9")),
        rx.literal(b"id"),
    ]
    for lexeme in lexemes:
        for name in [*NAMES, "k7", "k300", "name2", "ab", "\u00e9t\u00e9"]:
            spellings = key_spellings(name)
            if spellings is not None:
                expected = rx.shares_string(lexeme, spellings)
                assert _shares_string(lexeme, spellings, no_check) == expected, (lexeme, name)


class _EveryKey(frozenset):
    """Seen keys holding every name but those that start with a NUL: whatever key a token closes
    repeats one, except a current key whose raw bytes start with `\x01`. A control byte is no
    JSON string, so `_decoded` names that key with a NUL and its bytes' hex."""

    def __contains__(self, name: object) -> bool:
        return not (isinstance(name, str) and name.startswith("\x00"))

    def __or__(self, other: object) -> _EveryKey:
        return self


SEEN = _EveryKey({"a"})
#: Where the key scanner may stand before a token: (open containers' keys, mode, key so far, escaped).
SCANNER_CONTEXTS = [
    ((SEEN,), _VALUE, b"", False),
    ((SEEN,), _KEY_NEXT, b"", False),
    ((SEEN,), _KEY, b"", False),
    ((SEEN,), _KEY, b"a", True),
    ((SEEN,), _STRING, b"", False),
    ((SEEN,), _STRING, b"", True),
    ((SEEN, None), _VALUE, b"", False),
    ((SEEN, None), _STRING, b"", False),
    ((SEEN, SEEN), _KEY_NEXT, b"", False),
    ((SEEN, frozenset()), _KEY_NEXT, b"", False),
    ((None,), _VALUE, b"", False),
    ((), _VALUE, b"", False),
]


@pytest.mark.parametrize("context", SCANNER_CONTEXTS)
def test_tokens_passed_by_need_no_check(context, vocab) -> None:
    """`may_need_check` over-approximates `scan`: a token it passes by, from any open containers,
    gives `refusals` nothing to act on though every key it closes repeats one. Where keys may run
    out: no repeated key, no key begun in an object with keys, no end where a fresh key must come.
    Where they never do: no repeated key but the one being written (its lexer state refuses that)."""
    frames, mode, key, is_escaped = context
    keys = Keys(frames, mode, key, is_escaped, None)
    current_is_fresh = keys._replace(key=b"\x01" + key) if mode == _KEY else keys
    lexer = grammars.compile(DECLARED_AND_MORE, cache=False).automaton.lexer
    passed = {True: 0, False: 0}
    for token_id in vocab.key_tokens.comma_or_quote.tolist():
        data = vocab.token_bytes[token_id]
        if not may_need_check(data, mode, is_escaped, True):
            scanned = scan(keys, data, lexer)
            assert scanned is not None and not scanned[1] and not scanned[0].awaits_fresh_key, data
            passed[True] += 1
        if not may_need_check(data, mode, is_escaped, False):
            assert scan(current_is_fresh, data, lexer) is not None, data
            passed[False] += 1
    assert passed[False] >= passed[True] and passed[False] > 0


def test_brackets_need_a_check_only_where_keys_may_run_out() -> None:
    """Where keys never run out, only a key a token closes can be refused, so a bracket alone is
    passed by (closing a string value and its object, opening one) and a key closed after it is not;
    where keys may run out, a bracket changes which object a fresh key must come in, so it is checked."""
    for data, mode in [(b'"}', _STRING), (b"}]", _VALUE), (b'{"', _VALUE), (b"[{", _VALUE), (b'"},{"', _STRING)]:
        assert not may_need_check(data, mode, False, False), data
        assert may_need_check(data, mode, False, True), data
    for data, mode in [(b'}, "a"', _VALUE), (b'{"a":', _VALUE), (b'"}],"b"', _STRING)]:
        assert may_need_check(data, mode, False, False), data


def test_keys_decode_as_json_decodes_them() -> None:
    """A key's raw bytes decode to what `json.loads` makes of the string, escapes, controls, broken
    and surrogate UTF-8 included (keys without escapes take a shortcut)."""
    rng = random.Random(3)
    alphabet = [*b"Aa\\u00e9n", 0x00, 0x1F, 0x7F, 0x80, 0xBF, 0xC3, 0xA9, 0xED, 0xA0, 0xF0, 0x9F, 0x98, 0xC0, 0xFF]
    samples = [bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 7))) for _ in range(20_000)]
    for raw in [b"", b"caf\xc3\xa9", b"\xed\xa0\x80", b"\xc3", b"a\\u0062", b"\\ud83d\\ude00", *samples]:
        try:
            expected = str(json.loads(b'"' + raw + b'"'))
        except ValueError:
            expected = "\x00" + raw.hex()
        assert _decoded(raw) == expected, raw


def test_a_repeated_key_that_a_token_opens_with_its_quote_is_refused(vocab) -> None:
    """`")` can only begin the key `)`, already written, right after the separator: a token whose
    first byte begins the key from a lexeme start that the plain walk takes unrestricted (`, ?` may
    go on with a space, so the state after the comma is not the restricted key start)."""
    spec = {"type": "object", "propertyNames": {"enum": [")", "q"]}, "additionalProperties": {"type": "integer"}}
    matcher = grammars.compile(spec, cache=False).matcher(vocab)
    for byte in b'{")": 1,':
        matcher.advance(vocab.token_bytes.index(bytes([byte])))
    table, state, keys = matcher._table, matcher._state, matcher._keys
    assert keys is not None
    plain = table.allowed(state, no_check)
    keyed = table.allowed_with_keys(state, keys, no_check)
    repeated = vocab.token_bytes.index(b'")')
    assert plain[repeated] and not keyed[repeated]
    assert keyed[vocab.token_bytes.index(b'"')]
    brute = plain.copy()
    for token_id in np.flatnonzero(plain).tolist():
        brute[token_id] = walk_keyed(table.automaton, state, keys, vocab.token_bytes[token_id]) is not None
    assert np.array_equal(keyed, brute)


#: Keys of open objects for the compiled classifier (real frozensets; `SEEN` stands for every key).
SOME = frozenset({"a", "id", "\u00e9t\u00e9", "x1"})
CLASSIFIER_CONTEXTS = [
    ((SOME,), _VALUE, b"", False),
    ((SOME,), _KEY_NEXT, b"", False),
    ((SOME,), _KEY, b"", False),
    ((SOME,), _KEY, b"i", False),
    ((SOME,), _KEY, b"\xc3", False),
    ((SOME,), _KEY, b"a", True),
    ((SOME,), _STRING, b"", False),
    ((SOME,), _STRING, b"", True),
    ((SOME, None), _VALUE, b"", False),
    ((None, SOME), _KEY_NEXT, b"", False),
    ((SOME, frozenset()), _KEY_NEXT, b"", False),
    ((SOME, frozenset({"b"})), _VALUE, b"", False),
    ((frozenset(),), _KEY_NEXT, b"", False),
    ((None,), _VALUE, b"", False),
    ((), _VALUE, b"", False),
]
#: Tokens beyond the vocabulary's: keys closed and begun across brackets, escapes, controls, bad UTF-8.
CLASSIFIER_TOKENS = [
    b'"a",',
    b'a", "',
    b'd": 1, "x',
    b'"id": {"a": [1], "',
    b'}, "',
    b'}}, "a',
    b'"\\u0061": 1',
    b'"a\\"b",',
    b'"\x01": 2, "',
    b'"\xc3\xa9t\xc3\xa9", "',
    b'\xa9t\xc3\xa9", "x',
    b'"\xed\xa0\x80", "',
    b'"\xff", "',
    b'"b": {"c": 1}, "',
    b'], "',
    b'\\", "',
]


def _reference_verdicts(keys: Keys, data: bytes, lexer, keys_may_run_out: bool) -> set[int]:
    """The verdicts `_distinct_keys.classify` may give `data`, from `scan`: the one its rules name, and
    _ASK as well where a key the token closes needs the JSON decoder or is no UTF-8."""
    scanned = scan(keys, data, lexer)
    if scanned is None:
        verdict = _REFUSE
    elif not keys_may_run_out:
        verdict = _PASS
    else:
        after, starts = scanned
        if starts and any(_may_spell_seen(data[position + 1 :], seen, {}) for position, seen in starts):
            verdict = _ASK
        elif after.awaits_fresh_key:
            verdict = _AWAIT if after == keys._replace(mode=_KEY_NEXT, is_escaped=False) else _ASK
        else:
            verdict = _PASS
    try:
        (keys.key + data).decode("utf-8", "surrogatepass")
        plain = not any(byte < 0x20 or byte == ord("\\") for byte in keys.key + data)
    except UnicodeDecodeError:
        plain = False
    return {verdict} if plain else {verdict, _ASK}


@pytest.mark.parametrize("keys_may_run_out", [True, False], ids=["may-run-out", "never-run-out"])
@pytest.mark.parametrize("context", CLASSIFIER_CONTEXTS)
def test_compiled_verdicts_follow_scan(context, keys_may_run_out: bool, vocab) -> None:
    """Every verdict of the compiled classifier is what `scan` says `refusals` must do with the token,
    over every vocabulary token with a quote or a comma and the tokens above, from many scanner states
    (a token in plain UTF-8 gets exactly that verdict, so a classifier that asked Python always fails)."""
    assert distinct_keys.compiled_keys is not None, "grammars.core._distinct_keys is not built: run scripts/install.sh"
    frames, mode, key, is_escaped = context
    keys = Keys(frames, mode, key, is_escaped, None)
    lexer = grammars.compile(DECLARED_AND_MORE, cache=False).automaton.lexer
    tokens = [vocab.token_bytes[t] for t in vocab.key_tokens.comma_or_quote.tolist()] + CLASSIFIER_TOKENS
    verdicts = distinct_keys.compiled_keys.classify(frames, mode, key, is_escaped, tokens, keys_may_run_out)
    for data, verdict in zip(tokens, verdicts):
        assert verdict in _reference_verdicts(keys, data, lexer, keys_may_run_out), (data, verdict)
