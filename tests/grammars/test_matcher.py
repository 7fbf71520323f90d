"""Matchers over the real SmolLM2 vocabulary: masks, advance, fork.

The masks are checked against the definition: a token is allowed iff the text so far plus the
token's bytes is a prefix of some sentence (here: brute force over every token with `walk`).
"""

import numpy as np
import pytest

from grammars import TokenRejectedError
from grammars.compiler import compile_grammar
from grammars.core import byte_regex as rx
from grammars.core import ir

DIGITS = rx.repeat(rx.byte_range(48, 57), 1, None)
STRING = rx.concat(
    rx.literal(b'"'),
    rx.star(
        rx.alt(
            rx.byte_range(0x20, 0x21),
            rx.byte_range(0x23, 0x5B),
            rx.byte_range(0x5D, 0xFF),
            rx.concat(rx.literal(b"\\"), rx.byte_set(sum(1 << b for b in b'"\\/bfnrt'))),
        )
    ),
    rx.literal(b'"'),
)


def person_constraint():
    space = ir.opt(ir.lit(" "))
    return compile_grammar(
        ir.RuleSet().grammar(
            ir.seq(
                ir.lit('{"name":'),
                space,
                ir.lex(STRING),
                ir.lit(","),
                space,
                ir.lit('"age":'),
                space,
                ir.lex(DIGITS),
                ir.lit("}"),
            )
        )
    )


def brute_force_mask(constraint, vocab, state):
    automaton = constraint.automaton
    allowed = np.zeros(vocab.size, dtype=bool)
    for token_id, data in enumerate(vocab.token_bytes):
        if data and automaton.walk(state, data) is not None:
            allowed[token_id] = True
    allowed[list(vocab.eos_token_ids)] = automaton.can_end(state)
    return allowed


def test_masks_equal_the_definition_along_a_real_tokenization(vocab, hf_tokenizer):
    constraint = person_constraint()
    text = '{"name": "Alice \\"Al\\" Johnson", "age": 34}'
    ids = hf_tokenizer.encode(text, add_special_tokens=False).ids
    matcher = constraint.matcher(vocab)
    for token_id in ids:
        mask = matcher.mask().numpy()
        expected = brute_force_mask(constraint, vocab, matcher._state)
        assert np.array_equal(mask, expected), hf_tokenizer.decode([token_id])
        matcher.advance(token_id)
    assert matcher.is_accepting()
    assert matcher.mask()[list(vocab.eos_token_ids)].all()
    matcher.advance(vocab.eos_token_ids[0])
    assert matcher.is_finished() and not matcher.mask().any()


def test_rejected_token_raises_and_leaves_state(vocab, hf_tokenizer):
    matcher = person_constraint().matcher(vocab)
    bad = hf_tokenizer.token_to_id("hello")
    assert not matcher.mask()[bad]
    with pytest.raises(TokenRejectedError):
        matcher.advance(bad)
    assert matcher.mask().equal(person_constraint().matcher(vocab).mask())  # nothing was consumed
    with pytest.raises(TokenRejectedError):
        matcher.advance(vocab.eos_token_ids[0])


def test_fork_advances_independently(vocab, hf_tokenizer):
    constraint = person_constraint()
    ids = hf_tokenizer.encode('{"name": "Bo", "age": 7}', add_special_tokens=False).ids
    matcher = constraint.matcher(vocab)
    for token_id in ids[:4]:
        matcher.advance(token_id)
    twin = matcher.fork()
    mask_before = matcher.mask().clone()
    for token_id in ids[4:]:
        matcher.advance(token_id)
    assert matcher.is_accepting() and not twin.is_accepting()
    assert twin.mask().equal(mask_before)
    for token_id in ids[4:]:
        twin.advance(token_id)
    assert twin.is_accepting()


def test_masks_are_shared_between_matchers_of_one_constraint(vocab):
    constraint = person_constraint()
    assert constraint.matcher(vocab).mask() is constraint.matcher(vocab).mask()


def test_special_tokens_never_allowed_inside_strings(vocab, hf_tokenizer):
    matcher = person_constraint().matcher(vocab)
    for token_id in hf_tokenizer.encode('{"name": "Al', add_special_tokens=False).ids:
        matcher.advance(token_id)
    mask = matcher.mask()
    special = [i for i, data in enumerate(vocab.token_bytes) if data is None]
    assert not mask[special].any()
    assert mask.sum() > 40_000  # but nearly everything else is


@pytest.mark.parametrize("native", [True, False], ids=["compiled", "numpy"])
def test_equal_masks_share_one_array_and_hash_collisions_keep_others_apart(vocab, monkeypatch, native):
    """`MaskTable._shared` keeps one mask per distinct set of token bits, its bool array made once:
    equal bits get the first one, and masks whose hashes collide (here: every mask's) stay apart,
    each kept once."""
    from grammars.masking import token_bits, token_walk

    if not native:
        monkeypatch.setattr(token_walk, "native_walk", None)
    table = person_constraint().matcher(vocab)._table
    first = token_bits.from_ids(np.array([3, 500, vocab.size - 1]), vocab.size)
    other = token_bits.from_ids(np.array([3, 500]), vocab.size)
    kept_first = table._shared(*token_bits.identity(first))
    assert table._shared(*token_bits.identity(first.copy())) is kept_first
    assert np.flatnonzero(kept_first.allowed).tolist() == [3, 500, vocab.size - 1]
    assert kept_first.allowed.dtype == bool and kept_first.allowed.size == vocab.size
    assert token_bits.identity(first)[0] != token_bits.identity(other)[0]
    kept = table._num_distinct
    collided = [(7, token_bits.identity(bits)[1]) for bits in (other, first)]  # both in one bucket now
    kept_other, kept_first = (table._shared(*identity) for identity in collided)
    assert kept_other is not kept_first and np.flatnonzero(kept_other.allowed).tolist() == [3, 500]
    assert table._shared(*collided[0]) is kept_other and table._shared(*collided[1]) is kept_first
    assert table._num_distinct == kept + 2 and len(table._distinct[7]) == 2


def test_constraints_over_one_vocabulary_share_equal_masks(vocab):
    """Two constraints whose first masks are equal (the start of an object with one optional key)
    get one mask from the vocabulary's pool (`MaskPool`), its array and tensor made once, and a
    third constraint whose first mask differs gets its own."""
    import grammars

    first, second, other = (
        grammars.compile(schema, cache=False).matcher(vocab)
        for schema in (
            {"type": "object", "properties": {"city": {"type": "string"}}},
            {"type": "object", "properties": {"city": {"type": "integer"}}},
            {"type": "array", "items": {"type": "integer"}},
        )
    )
    assert first._table is not second._table
    assert first.mask() is second.mask()
    assert not other.mask().equal(first.mask())


def test_mask_pool_lets_the_least_recently_used_go_and_keeps_colliding_masks_apart(vocab):
    """A pool past its bound drops the masks used longest ago (a mask asked for again is made anew);
    masks whose hashes collide are kept apart, each found by its bits."""
    from grammars.masking import token_bits
    from grammars.masking.masks import MaskPool

    pool = MaskPool(max_masks=2)
    sets = [token_bits.identity(token_bits.from_ids(np.array([i, 1000 + i]), vocab.size)) for i in range(3)]
    kept = [pool.get(*sets[i], vocab.size) for i in range(2)]
    assert pool.get(*sets[0], vocab.size) is kept[0]  # used last now: the other one goes first
    third = pool.get(*sets[2], vocab.size)
    assert pool.held() == (2, 2 * (vocab.size + len(sets[0][1])))
    assert pool.get(*sets[0], vocab.size) is kept[0] and pool.get(*sets[2], vocab.size) is third
    assert pool.get(*sets[1], vocab.size) is not kept[1]
    assert np.flatnonzero(pool.get(*sets[1], vocab.size).allowed).tolist() == [1, 1001]
    colliding = MaskPool(max_masks=4)
    apart = [colliding.get(7, packed, vocab.size) for _, packed in sets]
    assert [colliding.get(7, packed, vocab.size) for _, packed in sets] == apart
    assert [np.flatnonzero(mask.allowed).tolist() for mask in apart] == [[0, 1000], [1, 1001], [2, 1002]]


def test_states_with_equal_masks_share_one_tensor(vocab, hf_tokenizer):
    """The tensor of a mask is made once per distinct mask array (`MaskTable._tensor`): states with
    equal masks (the insides of two string items) get one tensor, which shares the array's memory; a
    table that forgets its masks forgets their tensors too."""
    import grammars
    from grammars.masking import masks

    matcher = grammars.compile({"type": "array", "items": {"type": "string"}}, cache=False).matcher(vocab)
    table = matcher._table
    by_array: dict[int, set] = {}
    for token_id in hf_tokenizer.encode('["Alice", "Bob", "Carol"]', add_special_tokens=False).ids:
        matcher.mask()
        by_array.setdefault(id(table.allowed(matcher._state, lambda: None)), set()).add(matcher._state)
        matcher.advance(token_id)
    shared = next((states for states in by_array.values() if len(states) > 1), None)
    assert shared is not None, "no two states with one mask: the test wants some"
    first, second = (table.mask(state, lambda: None) for state in list(shared)[:2])
    assert first is second
    assert np.shares_memory(first.numpy(), table.allowed(next(iter(shared)), lambda: None))
    table._num_distinct = masks.MAX_MASK_BYTES  # full: the next new mask clears the caches
    table._make_room()
    assert not table._allowed and not table._distinct and not table._keyed


def test_tables_hold_no_walk_the_vocabulary_let_go(vocab, hf_tokenizer):
    """A table finds the walks of lexer states it walked before by weak reference (`MaskTable._walk`):
    once the vocabulary's walk cache lets them go, they are freed, and masks are computed as before."""
    import gc

    import grammars
    from grammars.masking import masks as mask_module
    from tests.grammars.test_native_walk import copy_of

    constraint = grammars.compile({"type": "object", "properties": {"city": {"type": "string"}}}, cache=False)
    matcher = constraint.matcher(copy_of(vocab))
    table = matcher._table
    masks = []
    for token_id in hf_tokenizer.encode('{"city": "Oslo"}', add_special_tokens=False).ids:
        masks.append(matcher.mask().clone())
        matcher.advance(token_id)
    assert table._walks and all(held() is not None for held in table._walks.values())
    table.vocab.__dict__["_state_walks"].clear()
    gc.collect()
    assert all(held() is None for held in table._walks.values())
    table._num_distinct = mask_module.MAX_MASK_BYTES  # full: forget every mask, keep the walks' weak references
    table._make_room()
    again = constraint.matcher(table.vocab)
    assert again._table is table and not table._allowed
    for token_id, expected in zip(hf_tokenizer.encode('{"city": "Oslo"}', add_special_tokens=False).ids, masks):
        assert again.mask().equal(expected)
        again.advance(token_id)


@pytest.mark.parametrize("size", [0, 1, 7, 8, 63, 64, 65, 1000, 49_152, 262_147])
def test_token_bits_are_numpys_packed_masks_compiled_or_not(size, monkeypatch):
    """A set of token bits (`token_bits`) is numpy's little-endian `packbits` of its bool mask, read a
    word at a time; its bool mask, compiled or not, is that mask again; the scatter and the per-word
    stores add and take out the same tokens; and the compiled hash tells sets one bit apart (each bit
    of a word, against partner words with trailing zeros too)."""
    from grammars.masking import token_bits, token_walk

    native = token_walk.native_walk
    assert native is not None
    rng = np.random.default_rng(size)
    mask = rng.integers(0, 2, size).astype(bool)
    bits = token_bits.from_ids(np.flatnonzero(mask), size)
    assert bits.dtype == token_bits.WORD and bits.size == token_bits.num_words(size)
    assert bits.tobytes()[: (size + 7) // 8] == np.packbits(mask, bitorder="little").tobytes()
    key, packed = native.bits_identity(bits)
    assert packed == bits.tobytes() and token_bits.identity(bits) == (key, packed)
    assert np.array_equal(token_bits.to_mask(packed, size), mask)
    widths = [width for width in (512, 256, 0) if _takes_width(native, width)]
    assert 0 in widths
    for width in widths:  # each of this CPU's ways to spread bits (the widest is the default)
        spread = np.frombuffer(native.bool_mask(bits, size, width), dtype=np.uint8)
        assert np.array_equal(spread, mask.astype(np.uint8))  # bytes 0 and 1: what a bool tensor holds
    with monkeypatch.context() as patch:
        patch.setattr(token_walk, "native_walk", None)
        assert np.array_equal(token_bits.to_mask(packed, size), mask)
    ids = rng.choice(size, min(size, 50), replace=False) if size else np.zeros(0, dtype=np.int64)
    assert np.array_equal(token_bits.contains(bits, ids), mask[ids])
    for value in (True, False):
        scattered, stored = bits.copy(), bits.copy()
        token_bits.assign(scattered, ids, value)
        token_bits.assign_words(stored, token_bits.word_flags(ids.tolist()), value)
        expected = mask.copy()
        expected[ids] = value
        assert np.array_equal(scattered, stored)
        assert np.array_equal(token_bits.to_mask(scattered, size), expected)
    for flipped in range(min(size, 200)):
        changed = bits.copy()
        token_bits.assign(changed, [flipped], not mask[flipped])
        assert native.bits_identity(changed)[0] != key
    if size > 64:
        sparse = token_bits.from_ids(np.array([64]), size)  # words with trailing zeros: one a 64-bit NH lost
        for flipped in range(min(size, 128)):
            changed = sparse.copy()
            token_bits.assign(changed, [flipped], flipped != 64)
            assert native.bits_identity(changed)[0] != native.bits_identity(sparse)[0]


def _takes_width(native, width: int) -> bool:
    """Whether this CPU spreads `width` bits a step in `_walk.bool_mask`."""
    try:
        native.bool_mask(b"", 0, width)
    except ValueError:
        return False
    return True


def test_compiled_walked_suspects_are_numpys(monkeypatch):
    """`_walk.walked_suspects` lists, in order, the suspect ids a mask allows that leave the walk's
    inside tokens or count inside too, as the numpy reference does (repeats kept), and refuses an
    id past the mask, ids of another width and flags that do not match the ids."""
    from grammars.masking import masks, token_bits, token_walk

    native = token_walk.native_walk
    assert native is not None
    rng = np.random.default_rng(0)
    size = 49_152
    mask = rng.integers(0, 2, size).astype(bool)
    inside = token_bits.from_ids(np.flatnonzero(rng.integers(0, 2, size)), size)
    for count in (0, 1, 31, 64, 2_000):
        suspects = masks._Suspects(
            rng.integers(0, size, count).astype(np.int32), rng.integers(0, 2, count).astype(bool)
        )
        compiled = native.walked_suspects(mask, inside, suspects.ids, suspects.inside_too)
        monkeypatch.setattr(token_walk, "native_walk", None)
        assert compiled == masks._walked_suspects(mask, inside, suspects)
        monkeypatch.setattr(token_walk, "native_walk", native)
        if count == 2_000:  # each rule decides some ids
            counted = set(compiled)
            assert any(
                too and token_bits.contains(inside, [i])[0]
                for i, too in zip(suspects.ids, suspects.inside_too)
                if i in counted
            )
            assert len(counted) < len(set(suspects.ids[mask[suspects.ids]].tolist()))
    flags = np.zeros(2, dtype=bool)
    with pytest.raises(IndexError, match="past the mask"):
        native.walked_suspects(mask, inside, np.array([0, size], dtype=np.int32), flags)
    with pytest.raises(TypeError, match="4 bytes"):
        native.walked_suspects(mask, inside, np.array([0, 1], dtype=np.int64), flags)
    with pytest.raises(ValueError, match="one inside_too flag per id"):
        native.walked_suspects(mask, inside, np.array([0], dtype=np.int32), flags)


def test_mask_memory_stays_in_budget_and_masks_stay_exact(vocab, runtime_tokenizer, monkeypatch):
    """A table whose distinct masks (plain and duplicate-key ones) fill MAX_MASK_BYTES forgets its
    masks and recomputes them: it stays within the budget and gives the masks an unbounded one does."""
    import json

    import grammars
    from grammars.masking import masks

    schema = {"type": "object", "additionalProperties": {"type": "integer"}}
    text = json.dumps({"alpha": 1, "beta": 22, "gamma": 333, "delta": 4})
    budget = 3 * vocab.size
    reference = grammars.compile(schema, cache=False).matcher(vocab)
    monkeypatch.setattr(masks, "MAX_MASK_BYTES", budget)
    bounded = grammars.compile(schema, cache=False).matcher(vocab)
    sizes = []
    for token_id in runtime_tokenizer.encode(text):
        expected, got = reference.mask(), bounded.mask()
        assert bool((expected == got).all())
        table = bounded._table
        assert table._num_distinct == sum(map(len, table._distinct.values()))
        assert table._num_distinct * vocab.size <= budget
        sizes.append(table._num_distinct)
        reference.advance(token_id)
        bounded.advance(token_id)
    assert bool((reference.mask() == bounded.mask()).all()) and bounded.mask()[vocab.eos_token_ids[0]]
    assert any(later < earlier for earlier, later in zip(sizes, sizes[1:])), "the budget never cleared the masks"
