"""The compiled paged attention of decode and verify passes (`paged_attention.cpp`), or why it is absent.

Its output rows depend only on each row's own query, position and cached context, never on what else
shares the pass (see the .cpp). The model runner chooses it, per pass, through `runs_compiled`; where it
is not built, or the cache is on another device or in another dtype, attention runs the SDPA reference
(`runtime.model.layers.attention`) instead.
"""

from __future__ import annotations

import torch

from runtime.model.kernels.loader import load_extension

_extension, ATTENTION_UNAVAILABLE_REASON = load_extension("_paged_attention")

#: Cache dtypes the compiled attention takes.
COMPILED_DTYPES = frozenset({torch.bfloat16, torch.float32})


def runs_compiled(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether the compiled attention takes a cache of this dtype on this device (and is built)."""
    return _extension is not None and dtype in COMPILED_DTYPES and device.type == "cpu"


def paged_attention(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    kv_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    slot_table: torch.Tensor,
    sequences: torch.Tensor,
    positions: torch.Tensor,
    *,
    scale: float,
    window: int | None,
) -> torch.Tensor:
    """Store the new tokens' K/V, then each token's attention over positions [max(0, p - window + 1), p]
    of its sequence, read in place.

    Storing inside the call saves the layer a stack and an index copy per pass.

    Args:
        queries: [T, H, D] rotated queries, dtype of the cache.
        keys: [T, KVH, D] rotated keys of the new tokens.
        values: [T, KVH, D] values of the new tokens.
        kv_cache: [num_slots, 2, KVH, D] contiguous, K at index 0 and V at 1, written in place.
        slot_mapping: [T] int64, the cache slot each new token's K/V goes to.
        slot_table: [B, L] int64, the cache slot of each position of each sequence.
        sequences: [T] int64, each token's row of `slot_table`.
        positions: [T] int64, each token's position p.
        scale: multiplies the query-key scores.
        window: positions a query sees, its own included; None: all up to its own.

    Returns:
        [T, H * D] in the queries' dtype.

    Raises:
        RuntimeError: the extension is not built, or shapes, dtypes or indices are inconsistent (the
            message names which; the cache is then left as it was).
    """
    if _extension is None:
        raise RuntimeError(ATTENTION_UNAVAILABLE_REASON)
    return _extension.paged_attention(
        queries, keys, values, kv_cache, slot_mapping, slot_table, sequences, positions, scale, window
    )
