"""Root-mean-square layer norm, the only normalization the supported families use (Gemma's `1 + w` weight is
folded into the weight at load time)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: Up to this many rows (decode, verification) the norm runs as one fused `layer_norm` (see `RMSNorm`).
MAX_LAYER_NORM_ROWS = 32


class RMSNorm(nn.Module):
    """`x / sqrt(mean(x^2) + eps) * weight`, computed in float32 whatever the activation dtype.

    On CPU `F.rms_norm` runs as about a dozen small kernels, which dominates its cost for the few
    rows of a decode step. `layer_norm` is one fused kernel, and over `[x, -x]` (whose mean is 0) its
    variance is exactly `mean(x^2)`, so for few rows the norm is computed that way; for many rows
    (prefill) the concatenation costs more than it saves and `F.rms_norm` is used.

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
        dim = x.shape[-1]
        if x.shape[0] > MAX_LAYER_NORM_ROWS:
            return F.rms_norm(x, (dim,), self.weight, self.eps)
        doubled = torch.cat((x, -x), dim=-1)  # [T, 2 * dim], mean 0
        return F.layer_norm(doubled, (2 * dim,), None, None, self.eps)[..., :dim] * self.weight
