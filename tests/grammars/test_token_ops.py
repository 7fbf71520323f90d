"""The fast paths' token-level operations over the real SmolLM2 vocabulary: `forced_bytes` checked
against the masks (every allowed token agrees with it, and it stops where two bytes or the end are
possible), `rollback` against fresh matchers advanced on the prefix, `check_tokens` against a fork
advanced token by token; and their forwarding through the engine's and the SDK's matcher wrappers.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

import grammars
from grammars.errors import RollbackError, TokenRejectedError
from grammars.masking.matcher import MAX_ROLLBACK_TOKENS
from runtime.engine.guarded_matcher import GuardedMatcher
from sdk import reasoning
from sdk.outputs import output_spec
from sdk.timing import MaskClock, TimedConstraint

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 6},
        "kind": {"const": "person"},
        "tags": {"type": "array", "items": {"enum": ["a", "bb"]}, "maxItems": 2},
        "age": {"type": "integer"},
    },
    "required": ["name", "kind", "age"],
    "additionalProperties": False,
}
#: Keys from a closed set, each at most once (`grammars.core.distinct_keys`).
TWO_KEYS = {"type": "object", "propertyNames": {"enum": ["a", "b"]}, "additionalProperties": {"type": "boolean"}}
NESTED = {
    "type": "object",
    "properties": {"items": {"type": "array", "items": {"$ref": "#"}, "maxItems": 2}, "ok": {"type": "boolean"}},
    "required": ["ok"],
}
SPECS = {
    "person": (PERSON, "flexible"),
    "person-compact": (PERSON, "compact"),
    "two-keys-compact": (TWO_KEYS, "compact"),
    "nested": (NESTED, "flexible"),
}


def constraint(name: str) -> grammars.Constraint:
    schema, whitespace = SPECS[name]
    return grammars.compile(schema, whitespace=whitespace)


@pytest.fixture(scope="module")
def single_bytes(vocab) -> tuple[np.ndarray, np.ndarray]:
    """(bytes, their tokens): the bytes that are tokens of their own (all but a few control bytes
    and bytes that never occur in UTF-8)."""
    ids = {data[0]: token_id for token_id, data in enumerate(vocab.token_bytes) if data and len(data) == 1}
    present = sorted(ids)
    return np.array(present), np.array([ids[byte] for byte in present])


def after(matcher, vocab, text: bytes):
    """`matcher` advanced byte by byte through `text` (single-byte tokens: no tokenizer choice)."""
    for byte in text:
        matcher.advance(vocab.token_bytes.index(bytes([byte])))
    return matcher


def random_walk(matcher, rng: random.Random, steps: int) -> list[int]:
    """Tokens sampled from the masks (half the time from the closing mask, so walks reach structure
    and ends), advanced on `matcher`; stops at EOS."""
    taken = []
    for _ in range(steps):
        mask = matcher.closing_mask() if rng.random() < 0.5 else matcher.mask()
        allowed = torch.nonzero(mask).flatten().tolist()
        if not allowed:
            break
        token_id = rng.choice(allowed)
        matcher.advance(token_id)
        taken.append(token_id)
        if matcher.is_finished():
            break
    return taken


# ---------------------------------------------------------------------------------------------- forced bytes


@pytest.mark.parametrize(
    ("name", "text", "forced"),
    [
        ("person", b"", b'{"name":'),
        ("person", b'{"name":', b""),  # flexible: a space may follow the colon
        ("person", b'{"name": "Bo", ', b'"kind":'),
        ("person", b'{"name": "Bo", "kind":', b""),
        ("person", b'{"name": "Bo", "kind": ', b'"person",'),
        ("person-compact", b"", b'{"name":"'),
        ("person-compact", b'{"name":"Bo"', b',"kind":"person","'),
        ("person-compact", b'{"name":"Bo","kind":"person","age":7', b""),  # `}` or a digit
        ("person-compact", b'{"name":"Bo","kind":"person","tags":["a","bb"]', b',"age":'),
        ("two-keys-compact", b'{"a":true', b""),  # `,` or `}`
        ("two-keys-compact", b'{"a":true,', b'"'),  # `b` may be spelled `\u0062`
        ("two-keys-compact", b'{"a":true,"b":f', b"alse}"),  # no fresh key left: no comma
        ("two-keys-compact", b'{"a":true,"a"', None),
    ],
)
def test_forced_bytes_examples(vocab, name, text, forced):
    matcher = constraint(name).matcher(vocab)
    if forced is None:
        with pytest.raises(TokenRejectedError):
            after(matcher, vocab, text)
        return
    assert after(matcher, vocab, text).forced_bytes() == forced


def test_forced_bytes_are_empty_where_the_text_may_end_and_once_finished(vocab):
    matcher = grammars.compile(grammars.Regex(r"ab(cd)?")).matcher(vocab)
    assert matcher.forced_bytes() == b"ab"
    after(matcher, vocab, b"ab")
    assert matcher.is_accepting() and matcher.forced_bytes() == b""
    after(matcher, vocab, b"c")
    assert matcher.forced_bytes() == b"d"
    matcher.advance(vocab.token_bytes.index(b"d"))
    matcher.advance(vocab.eos_token_ids[0])
    assert matcher.forced_bytes() == b""


def check_forced(matcher, vocab, single_bytes: tuple[np.ndarray, np.ndarray]) -> None:
    """`matcher.forced_bytes()` against the masks: every allowed token's bytes agree with it, each of
    its bytes is the only single byte allowed where it comes, and after it two bytes or the end are."""
    forced = matcher.forced_bytes()
    mask = matcher.mask().numpy()
    eos = list(vocab.eos_token_ids)
    if forced:
        assert not mask[eos].any()
        for token_id in np.flatnonzero(mask).tolist():
            data = vocab.token_bytes[token_id]
            assert data[: len(forced)] == forced[: len(data)], (forced, data)
    present, ids = single_bytes
    twin = matcher.fork()
    for byte in forced:
        assert present[twin.mask().numpy()[ids]].tolist() == [byte]
        twin.advance(int(ids[present == byte][0]))
    mask = twin.mask().numpy()
    assert mask[eos].any() or mask[ids].sum() >= 2


@pytest.mark.parametrize("name", sorted(SPECS))
def test_forced_bytes_agree_with_the_masks_on_random_walks(vocab, single_bytes, name):
    rng = random.Random(name)
    compiled = constraint(name)
    for _ in range(2):
        matcher = compiled.matcher(vocab)
        for _ in range(40):
            check_forced(matcher, vocab, single_bytes)
            if not random_walk(matcher, rng, 1) or matcher.is_finished():
                break


def test_forced_bytes_agree_with_the_masks_along_a_real_tokenization(vocab, hf_tokenizer, single_bytes):
    text = '{"name": "Bo", "kind": "person", "tags": ["bb"], "age": 7}'
    matcher = constraint("person").matcher(vocab)
    for token_id in hf_tokenizer.encode(text, add_special_tokens=False).ids:
        check_forced(matcher, vocab, single_bytes)
        matcher.advance(token_id)
    assert matcher.is_accepting()


# ---------------------------------------------------------------------------------------------- rollback


def same_position(matcher, reference) -> bool:
    """Whether two matchers behave alike from here: masks, forced bytes, accepting, finished."""
    return (
        matcher.is_finished() == reference.is_finished()
        and matcher.is_accepting() == reference.is_accepting()
        and matcher.forced_bytes() == reference.forced_bytes()
        and bool(matcher.mask().equal(reference.mask()))
    )


@pytest.mark.parametrize("name", sorted(SPECS))
def test_rollback_equals_a_fresh_matcher_on_the_prefix(vocab, name):
    rng = random.Random(name)
    compiled = constraint(name)
    matcher = compiled.matcher(vocab)
    tokens: list[int] = []
    for _ in range(8):
        tokens += random_walk(matcher, rng, rng.randint(1, 6))
        undo = rng.randint(0, len(tokens))
        matcher.rollback(undo)
        del tokens[len(tokens) - undo :]
        fresh = compiled.matcher(vocab)
        for token_id in tokens:
            fresh.advance(token_id)
        assert same_position(matcher, fresh)


def test_rollback_undoes_eos(vocab):
    matcher = grammars.compile(grammars.Regex("ab")).matcher(vocab)
    after(matcher, vocab, b"ab")
    mask = matcher.mask().clone()
    matcher.advance(vocab.eos_token_ids[0])
    assert matcher.is_finished()
    matcher.rollback(1)
    assert not matcher.is_finished() and matcher.mask().equal(mask)


def test_rollback_is_bounded_and_leaves_the_matcher_as_it_was(vocab):
    matcher = grammars.compile(grammars.Regex("[0-9]*")).matcher(vocab)
    after(matcher, vocab, b"7" * (MAX_ROLLBACK_TOKENS + 5))
    with pytest.raises(RollbackError):
        matcher.rollback(MAX_ROLLBACK_TOKENS + 1)
    with pytest.raises(RollbackError):
        matcher.rollback(-1)
    reference = after(grammars.compile(grammars.Regex("[0-9]*")).matcher(vocab), vocab, b"7" * 5)
    matcher.rollback(MAX_ROLLBACK_TOKENS)
    assert same_position(matcher, reference)
    with pytest.raises(RollbackError):
        matcher.rollback(1)


def test_forks_roll_back_independently_past_the_fork(vocab):
    compiled = constraint("person-compact")
    matcher = after(compiled.matcher(vocab), vocab, b'{"name":"Bo')
    twin = matcher.fork()
    after(matcher, vocab, b'","kind"')
    after(twin, vocab, b"b")
    twin.rollback(3)  # `b`, `o` and `B`: back before the fork
    matcher.rollback(8)
    assert same_position(twin, after(compiled.matcher(vocab), vocab, b'{"name":"'))
    assert same_position(matcher, after(compiled.matcher(vocab), vocab, b'{"name":"Bo'))


def test_rollback_restores_the_keys_seen(vocab):
    """Rolled back past a key, that key may be written again; rolled back to after it, it may not."""
    matcher = after(constraint("two-keys-compact").matcher(vocab), vocab, b'{"a":true,"b":false')
    twin = matcher.fork()
    matcher.rollback(len(b'"b":false'))
    with pytest.raises(TokenRejectedError):
        after(matcher.fork(), vocab, b'"a"')
    assert after(matcher, vocab, b'"b":true}').is_accepting()
    twin.rollback(len(b'"a":true,"b":false'))
    assert after(twin, vocab, b'"b":true,"a":false}').is_accepting()


# ---------------------------------------------------------------------------------------------- check_tokens


def advanced_count(matcher, token_ids: list[int]) -> int:
    """How many of `token_ids` a fork of `matcher` takes, advanced one by one."""
    twin = matcher.fork()
    for count, token_id in enumerate(token_ids):
        try:
            twin.advance(token_id)
        except TokenRejectedError:
            return count
    return len(token_ids)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_check_tokens_equals_advancing_a_fork(vocab, name):
    rng = random.Random(name)
    compiled = constraint(name)
    eos = vocab.eos_token_ids[0]
    for _ in range(4):
        matcher = compiled.matcher(vocab)
        random_walk(matcher, rng, rng.randint(0, 8))
        draft = random_walk(matcher.fork(), rng, 8)
        if draft:
            position = rng.randrange(len(draft) + 1)  # a wrong token, EOS, or nothing, somewhere
            draft[position:position] = [rng.choice([rng.randrange(vocab.size), eos, draft[-1]])]
        before = matcher.mask().clone(), matcher.forced_bytes()
        assert matcher.check_tokens(draft) == advanced_count(matcher, draft)
        assert matcher.mask().equal(before[0]) and matcher.forced_bytes() == before[1]


def test_check_tokens_stops_after_eos(vocab):
    matcher = grammars.compile(grammars.Regex("ab")).matcher(vocab)
    a, b, eos = vocab.token_bytes.index(b"a"), vocab.token_bytes.index(b"b"), vocab.eos_token_ids[0]
    assert matcher.check_tokens([a, b, eos, a]) == 3
    assert matcher.check_tokens([a, eos]) == 1
    assert matcher.check_tokens([]) == 0


# ---------------------------------------------------------------------------------------------- wrappers


class _OldMatcher:
    """A third-party matcher written before the fast paths: mask, advance, is_accepting, fork only."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.error = None

    def mask(self, max_seconds=None, max_remaining_tokens=None):
        return self.inner.mask(max_seconds, max_remaining_tokens)

    def advance(self, token_id: int) -> None:
        self.inner.advance(token_id)

    def is_accepting(self) -> bool:
        return self.inner.is_accepting()

    def fork(self) -> _OldMatcher:
        return _OldMatcher(self.inner.fork())


def test_the_guard_forwards_the_fast_path_operations_and_drops_its_cached_mask(vocab):
    guarded = GuardedMatcher(constraint("person-compact").matcher(vocab), None)
    start = guarded.mask()
    after(guarded, vocab, b'{"name":"Bo"')
    assert guarded.forced_bytes() == b',"kind":"person","'
    ids = [vocab.token_bytes.index(bytes([byte])) for byte in b',"kind":"x']
    assert guarded.check_tokens(ids) == len(ids) - 1
    assert guarded.can_roll_back
    guarded.rollback(len(b'{"name":"Bo"'))
    assert guarded.mask().equal(start)


def test_the_guard_stands_in_for_a_matcher_without_the_operations(vocab):
    guarded = GuardedMatcher(_OldMatcher(constraint("person-compact").matcher(vocab)), None)
    after(guarded, vocab, b'{"name":"Bo"')
    assert guarded.forced_bytes() == b""  # forcing nothing is exact
    ids = [vocab.token_bytes.index(bytes([byte])) for byte in b',"kind":"x']
    assert guarded.check_tokens(ids) == len(ids) - 1
    assert not guarded.can_roll_back
    with pytest.raises(RollbackError):
        guarded.rollback(1)
    assert guarded.error is None


def test_the_timed_matcher_forwards_and_times_the_operations(vocab):
    clock = MaskClock()
    timed = TimedConstraint(constraint("person-compact"), clock).matcher(vocab)
    after(timed, vocab, b'{"name":"Bo"')
    spent = clock.seconds
    assert timed.forced_bytes() == b',"kind":"person","'
    assert timed.check_tokens([vocab.token_bytes.index(b",")]) == 1
    timed.rollback(2)
    assert timed.forced_bytes() == b""  # inside the name again
    assert clock.seconds > spent


def test_budgeted_reasoning_checks_drafts_across_the_switch_and_rolls_back_into_the_reasoning(vocab, hf_tokenizer):
    """With 3 reasoning tokens, a draft of a 4th is refused where the marker must come; rolled back
    into the reasoning, the free matcher is in charge again, and the budget counts from there."""

    def encode(text: str) -> list[int]:
        return hf_tokenizer.encode(text, add_special_tokens=False).ids

    budgeted = reasoning.BudgetedReasoning(output_spec(PERSON), max_reasoning_tokens=3)
    matcher = budgeted.matcher(vocab)
    thinking, more, marker = encode("Let me see"), encode(" more"), encode("\nAnswer:")
    assert len(thinking) == 3
    assert matcher.check_tokens(thinking + more) == 3
    assert matcher.check_tokens(thinking + marker) == 3 + len(marker)
    for token_id in thinking + marker:
        matcher.mask()
        matcher.advance(token_id)
    assert matcher.forced_bytes() == b""  # a space may follow the marker
    matcher.rollback(len(marker) + 1)
    assert matcher.check_tokens(more) == 1
    matcher.mask()
    matcher.advance(more[0])
    matcher.mask()
    assert matcher.forced_bytes() == reasoning.MARKER.encode()  # the budget is spent again
    with pytest.raises(RollbackError):
        matcher.rollback(5)
