"""Types of the compiled extension built from paged_attention.cpp."""

import torch

def paged_attention(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    kv_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    slot_table: torch.Tensor,
    sequences: torch.Tensor,
    positions: torch.Tensor,
    scale: float,
    window: int | None,
) -> torch.Tensor: ...
