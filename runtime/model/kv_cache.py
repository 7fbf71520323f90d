"""Paged KV storage: one preallocated tensor of fixed-size blocks shared by every sequence.

The control plane (`runtime.engine.block_manager.BlockManager`) decides which block holds which positions;
this module only owns the memory. A sequence's position `p` lives in slot
`block_table[p // block_size] * block_size + p % block_size` of every layer, so no request reserves
room for a maximum length and sequences can share blocks (prefix caching, forks) by id.

K and V of a slot sit side by side (`[..., 2, KVH, D]`) so one index write stores both and one gather
reads both.
"""

from __future__ import annotations

import torch

from runtime.config import ModelConfig
from runtime.errors import RequestError


class KVCache:
    """K/V of every layer for `num_blocks` blocks of `block_size` positions.

    Args:
        config: the model (layers, K/V heads, head size).
        num_blocks: blocks in the pool.
        block_size: positions per block.
        dtype: storage dtype (the model's activation dtype).
        device: where the storage lives.

    Raises:
        RequestError: a non-positive `num_blocks` or `block_size`.
    """

    def __init__(
        self,
        config: ModelConfig,
        *,
        num_blocks: int,
        block_size: int,
        dtype: torch.dtype,
        device: torch.device | str = "cpu",
    ) -> None:
        if num_blocks < 1:
            raise RequestError(f"must be at least 1, not {num_blocks}", "num_blocks")
        if block_size < 1:
            raise RequestError(f"must be at least 1, not {block_size}", "block_size")
        self.num_blocks = num_blocks
        self.block_size = block_size
        kv_shape = (2, config.num_kv_heads, config.head_dim)
        self.storage = torch.zeros(
            (config.num_layers, num_blocks, block_size, *kv_shape), dtype=dtype, device=device
        )  # [layers, blocks, block_size, 2, KVH, D]
        #: Per layer, the same memory as [num_blocks * block_size, 2, KVH, D]: one row per slot.
        self.layers = [layer.view(num_blocks * block_size, *kv_shape) for layer in self.storage]

    @property
    def bytes_per_token(self) -> int:
        """Bytes one position takes across all layers: layers x 2 x KVH x D x dtype size."""
        return self.storage[:, 0, 0].numel() * self.storage.element_size()

    @property
    def pool_bytes(self) -> int:
        """Bytes of the whole pool."""
        return self.storage.numel() * self.storage.element_size()

    def copy_blocks(self, pairs: list[tuple[int, int]]) -> None:
        """Copy the K/V of each `src` block into its `dst` block in every layer (copy-on-write of shared blocks).

        Args:
            pairs: (src, dst) block ids; every dst distinct and no dst also a src, so the order of
                copies does not matter.

        Raises:
            RequestError: a block id outside the pool, or a dst repeated or also a src.
        """
        if not pairs:
            return
        sources = [src for src, _ in pairs]
        targets = [dst for _, dst in pairs]
        for block_id in sources + targets:
            self.check_block_id(block_id, "pairs")
        if len(set(targets)) != len(targets) or set(targets) & set(sources):
            raise RequestError(f"copy targets must be distinct and not sources: {pairs}", "pairs")
        device = self.storage.device
        self.storage[:, torch.tensor(targets, device=device)] = self.storage[:, torch.tensor(sources, device=device)]

    def check_block_id(self, block_id: int, field: str) -> None:
        """Raise `RequestError` naming `field` unless `block_id` is a block of this pool."""
        if not 0 <= block_id < self.num_blocks:
            raise RequestError(f"block id {block_id} is outside the pool of {self.num_blocks} blocks", field)
