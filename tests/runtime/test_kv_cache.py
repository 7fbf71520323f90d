"""Paged KV storage: accounting, block copies across every layer, and rejected block ids."""

from __future__ import annotations

import pytest
import torch

from runtime.config import ModelConfig
from runtime.errors import RequestError
from runtime.model.kv_cache import KVCache

CONFIG = ModelConfig(
    architecture="llama",
    vocab_size=32,
    hidden_size=48,
    intermediate_size=64,
    num_layers=3,
    num_heads=6,
    num_kv_heads=2,
    max_position_embeddings=64,
)


def test_accounting_follows_the_formula() -> None:
    cache = KVCache(CONFIG, num_blocks=5, block_size=4, dtype=torch.bfloat16)
    # layers x K and V x kv heads x head_dim x bytes
    assert cache.bytes_per_token == 3 * 2 * 2 * 8 * 2
    assert cache.pool_bytes == cache.bytes_per_token * 5 * 4
    assert len(cache.layers) == 3 and cache.layers[0].shape == (20, 2, 2, 8)


def test_layer_views_share_the_storage_slot_by_slot() -> None:
    cache = KVCache(CONFIG, num_blocks=5, block_size=4, dtype=torch.float32)
    cache.layers[1][4 * 3 + 2] = 7.0  # block 3, offset 2
    assert cache.storage[1, 3, 2].eq(7.0).all()
    assert cache.storage.sum() == 7.0 * 2 * 2 * 8


def test_copy_blocks_copies_every_layer_and_leaves_the_rest() -> None:
    cache = KVCache(CONFIG, num_blocks=6, block_size=4, dtype=torch.float32)
    cache.storage.copy_(torch.randn(cache.storage.shape))
    before = cache.storage.clone()
    cache.copy_blocks([(1, 4), (2, 5)])
    assert torch.equal(cache.storage[:, 4], before[:, 1])
    assert torch.equal(cache.storage[:, 5], before[:, 2])
    assert torch.equal(cache.storage[:, :4], before[:, :4])
    cache.copy_blocks([])
    assert torch.equal(cache.storage[:, 4], before[:, 1])


@pytest.mark.parametrize("pairs", [[(0, 6)], [(-1, 2)], [(0, 1), (2, 1)], [(0, 1), (1, 2)]])
def test_copy_blocks_rejects_bad_pairs(pairs: list[tuple[int, int]]) -> None:
    cache = KVCache(CONFIG, num_blocks=6, block_size=4, dtype=torch.float32)
    with pytest.raises(RequestError) as info:
        cache.copy_blocks(pairs)
    assert info.value.field == "pairs"


@pytest.mark.parametrize(("num_blocks", "block_size", "field"), [(0, 4, "num_blocks"), (3, 0, "block_size")])
def test_pool_must_have_room(num_blocks: int, block_size: int, field: str) -> None:
    with pytest.raises(RequestError) as info:
        KVCache(CONFIG, num_blocks=num_blocks, block_size=block_size, dtype=torch.float32)
    assert info.value.field == field
