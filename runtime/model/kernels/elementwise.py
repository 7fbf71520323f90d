"""The compiled per-row decoder operations (`elementwise.cpp`): RMSNorm (with the residual add before it),
gated activations, RoPE.

The layers call them through `runs_compiled` so that a tensor the extension does not take (another
device or dtype), or a tree where it is not built, runs the torch reference instead.
"""

from __future__ import annotations

import torch

from runtime.model.kernels.loader import load_extension

_extension, ELEMENTWISE_UNAVAILABLE_REASON = load_extension("_elementwise")

#: Activation dtypes the compiled operations take.
COMPILED_DTYPES = frozenset({torch.bfloat16, torch.float32})
#: `gated_activation`'s code for each activation it implements, by Hugging Face `hidden_act` name.
ACTIVATION_CODES = {"silu": 0, "gelu_pytorch_tanh": 1}


def runs_compiled(x: torch.Tensor) -> bool:
    """Whether the compiled operations take `x` (built, CPU, bfloat16 or float32)."""
    return _extension is not None and x.dtype in COMPILED_DTYPES and x.is_cpu


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """`x / sqrt(mean(x^2) + eps) * weight` per row, in float32, rounded once to x's dtype (as `F.rms_norm`)."""
    assert _extension is not None, ELEMENTWISE_UNAVAILABLE_REASON
    return _extension.rms_norm(x, weight, eps)


def add_rms_norm(
    x: torch.Tensor, delta: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """`x + delta` (rounded as torch's add) and its rows normalized as `rms_norm`: a residual add and the next
    norm in one call. x and delta: contiguous [T, D] of one dtype."""
    assert _extension is not None, ELEMENTWISE_UNAVAILABLE_REASON
    return _extension.add_rms_norm(x, delta, weight, eps)


def gated_activation(gate_up: torch.Tensor, activation: str) -> torch.Tensor:
    """`act(gate) * up` for `gate_up` [T, 2I] (gate columns first); `activation` a key of `ACTIVATION_CODES`."""
    assert _extension is not None, ELEMENTWISE_UNAVAILABLE_REASON
    return _extension.gated_activation(gate_up, ACTIVATION_CODES[activation])


def rope(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """`x * cos + roll(x, D / 2) * signed_sin` for x [T, N, D] (heads contiguous), rounded as torch's ops."""
    assert _extension is not None, ELEMENTWISE_UNAVAILABLE_REASON
    return _extension.rope(x, cos, signed_sin)
