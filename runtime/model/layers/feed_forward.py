"""The gated SiLU feed-forward block of the Llama family, with gate and up projections fused."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FeedForward(nn.Module):
    """`down(silu(gate(x)) * up(x))`, with `gate` and `up` as one matmul (`gate_up`, gate rows first).

    Args:
        hidden_size: model width.
        intermediate_size: width of the gated hidden layer.
    """

    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.gate_up = nn.Linear(hidden_size, 2 * intermediate_size, bias=False)
        self.down = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)  # [T, I] each
        return self.down(F.silu(gate) * up)
