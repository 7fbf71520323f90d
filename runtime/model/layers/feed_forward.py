"""The gated feed-forward block (SwiGLU, or Gemma's GeGLU), with gate and up projections fused."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from runtime.errors import UnsupportedModelError
from runtime.model.kernels import elementwise

#: Gate activations by Hugging Face `hidden_act` name.
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": F.silu,
    "gelu_pytorch_tanh": partial(F.gelu, approximate="tanh"),
}


class FeedForward(nn.Module):
    """`down(act(gate(x)) * up(x))`, with `gate` and `up` as one matmul (`gate_up`, gate rows first).

    Args:
        hidden_size: model width.
        intermediate_size: width of the gated hidden layer.
        hidden_act: the gate's activation, a key of `ACTIVATIONS`.

    Raises:
        UnsupportedModelError: an activation outside `ACTIVATIONS`.
    """

    def __init__(self, hidden_size: int, intermediate_size: int, hidden_act: str = "silu") -> None:
        super().__init__()
        if hidden_act not in ACTIVATIONS:
            raise UnsupportedModelError(f"activation {hidden_act!r} (supported: {', '.join(ACTIVATIONS)})")
        self.hidden_act = hidden_act
        self.activation = ACTIVATIONS[hidden_act]
        self.gate_up = nn.Linear(hidden_size, 2 * intermediate_size, bias=False)
        self.down = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_up = self.gate_up(x)  # [T, 2I]
        if elementwise.runs_compiled(gate_up):
            return self.down(elementwise.gated_activation(gate_up, self.hidden_act))
        gate, up = gate_up.chunk(2, dim=-1)  # [T, I] each
        return self.down(self.activation(gate) * up)
