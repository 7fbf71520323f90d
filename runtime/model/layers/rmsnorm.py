"""Root-mean-square layer norm, the only normalization the supported families use (Gemma's `1 + w` weight is
folded into the weight at load time)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from runtime.model.kernels import elementwise

#: Up to this many rows (decode, verification) the norm runs as one fused `layer_norm` (see `RMSNorm`).
MAX_LAYER_NORM_ROWS = 32


class RMSNorm(nn.Module):
    """`x / sqrt(mean(x^2) + eps) * weight`, computed in float32 whatever the activation dtype.

    Where the compiled operations are built it is one compiled call (`elementwise.rms_norm`), whose
    rows never depend on the batch. Otherwise `rms_norm_reference` runs (the tests' reference).

    Args:
        dim: size of the normalized (last) dimension.
        eps: added to the mean square before the square root, from the checkpoint's config.
    """

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize the last dimension of `x` ([T, dim], or [T, heads, dim] for per-head QK-norm)."""
        if elementwise.runs_compiled(x):
            return elementwise.rms_norm(x, self.weight, self.eps)
        return rms_norm_reference(x, self.weight, self.eps)

    def add_and_norm(self, x: torch.Tensor, delta: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """`(x + delta, norm(x + delta))` for [T, dim] rows (delta None: `(x, norm(x))`): a residual add and
        this norm, one compiled call where built (a decode step's adds cost their dispatch, not their arithmetic)."""
        if delta is None:
            return x, self(x)
        if elementwise.runs_compiled(x) and x.is_contiguous() and delta.is_contiguous() and delta.dtype == x.dtype:
            return elementwise.add_rms_norm(x, delta, self.weight, self.eps)
        total = x + delta
        return total, self(total)


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """`RMSNorm` in torch ops. `F.rms_norm` runs as about a dozen small kernels on CPU, which dominates
    for the few rows of a decode step; `layer_norm` is one, and over `[x, -x]` (mean 0) its variance is
    exactly `mean(x^2)`, so few rows are normalized that way (for many, the concatenation costs more)."""
    dim = x.shape[-1]
    if x.shape[0] > MAX_LAYER_NORM_ROWS:
        return F.rms_norm(x, (dim,), weight, eps)
    doubled = torch.cat((x, -x), dim=-1)  # [T, 2 * dim], mean 0
    return F.layer_norm(doubled, (2 * dim,), None, None, eps)[..., :dim] * weight
