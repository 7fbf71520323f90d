"""BlockManager: allocation, refcounted sharing, copy-on-write, prefix caching, accounting."""

from __future__ import annotations

import itertools

import pytest

from runtime.engine.block_manager import BlockManager
from runtime.engine.sequence import Sequence
from runtime.errors import EngineError

BLOCK_SIZE = 4
_seq_ids = itertools.count()


def make_seq(token_ids: list[int], num_prompt_tokens: int | None = None) -> Sequence:
    num_prompt = len(token_ids) if num_prompt_tokens is None else num_prompt_tokens
    return Sequence(seq_id=next(_seq_ids), token_ids=list(token_ids), num_prompt_tokens=num_prompt)


def compute(manager: BlockManager, seq: Sequence) -> None:
    """What a forward pass does to the control plane: every token becomes cached."""
    seq.num_cached = seq.num_tokens
    manager.cache_full_blocks(seq)


def decode(manager: BlockManager, seq: Sequence, token_id: int) -> list[tuple[int, int]]:
    seq.append_token(token_id)
    pairs = manager.append(seq)
    compute(manager, seq)
    return pairs


def test_allocate_covers_tokens_and_free_returns_everything() -> None:
    manager = BlockManager(8, BLOCK_SIZE, bytes_per_token=10)
    seq = make_seq(list(range(9)))
    assert manager.can_allocate(seq)
    manager.allocate(seq)
    assert len(seq.block_table) == 3 and len(set(seq.block_table)) == 3
    assert (manager.num_used_blocks, manager.num_free_blocks) == (3, 5)
    assert manager.bytes_used == 3 * BLOCK_SIZE * 10
    assert seq.num_cached == 0
    manager.free(seq)
    assert seq.block_table == [] and manager.num_free_blocks == 8 and manager.bytes_used == 0


def test_allocation_is_refused_when_the_pool_is_short() -> None:
    manager = BlockManager(2, BLOCK_SIZE)
    seq = make_seq(list(range(9)))  # needs 3 blocks
    assert not manager.can_allocate(seq)
    with pytest.raises(EngineError):
        manager.allocate(seq)
    assert manager.num_free_blocks == 2


def test_append_allocates_only_when_a_block_fills() -> None:
    manager = BlockManager(8, BLOCK_SIZE, enable_prefix_caching=False)
    seq = make_seq([1, 2, 3])
    manager.allocate(seq)
    compute(manager, seq)
    assert decode(manager, seq, 4) == [] and len(seq.block_table) == 1
    seq.append_token(5)
    assert manager.num_blocks_needed_to_append([seq]) == 1
    manager.append(seq)
    assert len(seq.block_table) == 2


def test_fork_shares_blocks_and_copy_on_write_splits_the_partial_block() -> None:
    manager = BlockManager(8, BLOCK_SIZE, enable_prefix_caching=False)
    parent = make_seq([1, 2, 3, 4, 5, 6])  # one full block, one partial
    manager.allocate(parent)
    compute(manager, parent)
    child = make_seq([1, 2, 3, 4, 5, 6])
    manager.fork(parent, child)
    assert child.block_table == parent.block_table and child.num_cached == parent.num_cached
    assert all(manager.ref_count(b) == 2 for b in parent.block_table)
    assert manager.num_used_blocks == 2

    child.append_token(7)
    parent.append_token(8)
    assert manager.num_blocks_needed_to_append([child]) == 1
    assert manager.num_blocks_needed_to_append([child, parent]) == 1  # the second writer keeps the original
    pairs = manager.append(child)
    shared_full, old_partial = parent.block_table
    assert pairs == [(old_partial, child.block_table[1])]
    assert child.block_table[0] == shared_full and child.block_table[1] != old_partial
    assert manager.ref_count(shared_full) == 2 and manager.ref_count(old_partial) == 1
    # The last sharer writes in place: no copy.
    assert manager.append(parent) == []
    manager.free(parent)
    manager.free(child)
    assert manager.num_free_blocks == 8


def test_sharers_of_a_full_last_block_need_no_copy() -> None:
    manager = BlockManager(8, BLOCK_SIZE, enable_prefix_caching=False)
    parent = make_seq([1, 2, 3, 4])
    manager.allocate(parent)
    compute(manager, parent)
    child = make_seq([1, 2, 3, 4])
    manager.fork(parent, child)
    child.append_token(9)
    assert manager.append(child) == []
    assert child.block_table[0] == parent.block_table[0] and len(child.block_table) == 2


def test_append_is_refused_when_copy_on_write_has_no_block() -> None:
    manager = BlockManager(2, BLOCK_SIZE, enable_prefix_caching=False)
    parent = make_seq([1, 2, 3, 4, 5])
    manager.allocate(parent)  # both blocks
    compute(manager, parent)
    child = make_seq([1, 2, 3, 4, 5])
    manager.fork(parent, child)
    child.append_token(6)
    assert not manager.can_append(child)
    with pytest.raises(EngineError):
        manager.append(child)
    assert child.block_table == parent.block_table  # nothing changed halfway


def test_prefix_cache_hits_full_blocks_of_a_computed_prompt() -> None:
    manager = BlockManager(16, BLOCK_SIZE)
    prompt = list(range(100, 110))  # two full blocks and a partial one
    first = make_seq(prompt)
    manager.allocate(first)
    compute(manager, first)
    assert manager.num_cached_blocks == 2
    second = make_seq(prompt + [7])
    assert manager.num_blocks_needed_to_allocate(second) == 1  # only the partial tail is new
    manager.allocate(second)
    assert second.num_cached == 8
    assert second.block_table[:2] == first.block_table[:2]
    assert second.block_table[2] != first.block_table[2]
    assert manager.ref_count(first.block_table[0]) == 2


def test_prefix_cache_leaves_the_last_token_to_feed() -> None:
    manager = BlockManager(16, BLOCK_SIZE)
    prompt = list(range(8))  # exactly two full blocks
    first = make_seq(prompt)
    manager.allocate(first)
    compute(manager, first)
    again = make_seq(prompt)
    manager.allocate(again)
    assert again.num_cached == 4 and again.num_uncached == 4
    assert again.block_table[1] != first.block_table[1]  # the block that is written again is private


def test_prefix_cache_is_verified_by_content_and_chain() -> None:
    manager = BlockManager(16, BLOCK_SIZE)
    first = make_seq([1, 2, 3, 4, 5, 6, 7, 8, 9])
    manager.allocate(first)
    compute(manager, first)
    same_second_block_other_prefix = make_seq([0, 2, 3, 4, 5, 6, 7, 8, 9])
    manager.allocate(same_second_block_other_prefix)
    assert same_second_block_other_prefix.num_cached == 0


def test_freed_cached_blocks_are_reused_by_later_requests_until_evicted() -> None:
    manager = BlockManager(4, BLOCK_SIZE)
    prompt = list(range(9))
    first = make_seq(prompt)
    manager.allocate(first)
    compute(manager, first)
    manager.free(first)
    assert manager.num_free_blocks == 4 and manager.num_cached_blocks == 2
    second = make_seq(prompt)
    manager.allocate(second)
    assert second.num_cached == 8
    manager.free(second)
    # Fill the pool with unrelated tokens: the cached blocks are evicted, and no stale hit remains.
    filler = make_seq(list(range(500, 516)))
    manager.allocate(filler)
    compute(manager, filler)
    manager.free(filler)
    third = make_seq(prompt)
    manager.allocate(third)
    assert third.num_cached == 0


def test_cache_full_blocks_registers_blocks_as_they_fill_during_decode() -> None:
    manager = BlockManager(8, BLOCK_SIZE)
    seq = make_seq([1, 2, 3], num_prompt_tokens=3)
    manager.allocate(seq)
    compute(manager, seq)
    assert manager.num_cached_blocks == 0
    decode(manager, seq, 4)
    assert manager.num_cached_blocks == 1
    for token_id in range(5, 9):
        decode(manager, seq, token_id)
    assert manager.num_cached_blocks == 2
    probe = make_seq([1, 2, 3, 4, 5, 6, 7, 8, 9])
    manager.allocate(probe)
    assert probe.num_cached == 8


def test_fork_and_allocate_refuse_a_sequence_that_already_holds_blocks() -> None:
    manager = BlockManager(8, BLOCK_SIZE)
    seq = make_seq([1, 2, 3])
    manager.allocate(seq)
    with pytest.raises(EngineError):
        manager.allocate(seq)
    with pytest.raises(EngineError):
        manager.fork(seq, seq)
