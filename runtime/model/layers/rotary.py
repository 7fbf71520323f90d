"""Rotary position embeddings (RoPE) in Hugging Face's rotate-half layout, with frequency scaling.

The model computes the cos/sin tables once per forward pass for the positions of the new tokens, and
every layer rotates its query and key heads together with them. Supported `rope_scaling` types:
none ("default"), "linear" (positions divided by a factor), "llama3" (Llama 3.1's smoothed
per-frequency scaling), "frequency_factors" (the same stated as one divisor per frequency, as a GGUF's
`rope_freqs` tensor holds it) and "longrope" (Phi-3) within its original context, where its short
factors apply at every length (the loader caps the context there). Types whose frequencies depend on
the current sequence length ("dynamic", "yarn", longrope past the original context) would give K/V
already in the cache stale rotations, so they raise.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from runtime.config import ModelConfig
from runtime.errors import UnsupportedModelError
from runtime.model.kernels import elementwise

#: `rope_scaling["rope_type"]` values this module implements.
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3", "frequency_factors", "longrope")


def rope_inv_freq(config: ModelConfig, *, theta: float | None = None) -> torch.Tensor:
    """The inverse frequency of each rotated pair of a head, after the config's rope scaling.

    Computed exactly as transformers does, so fp32 logits match it to rounding.

    Args:
        config: the model; reads `head_dim`, `rope_theta` and `rope_scaling`.
        theta: a base other than `config.rope_theta`, without scaling (Gemma 3's local layers).

    Returns:
        float32 tensor [head_dim // 2] on the CPU.

    Raises:
        UnsupportedModelError: a rope scaling type outside `SUPPORTED_ROPE_TYPES`, or one missing a
            parameter it needs.
    """
    dim = config.head_dim
    exponents = torch.arange(0, dim, 2, dtype=torch.int64, device="cpu").float() / dim
    if theta is not None:
        return 1.0 / (theta**exponents)
    inv_freq = 1.0 / (config.rope_theta**exponents)  # [D/2]
    scaling = config.rope_scaling or {}
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type == "default":
        return inv_freq
    if rope_type == "linear":
        return inv_freq / _scaling_param(scaling, "factor")
    if rope_type == "llama3":
        return _llama3_inv_freq(inv_freq, scaling)
    if rope_type in ("frequency_factors", "longrope"):
        key = "factors" if rope_type == "frequency_factors" else "short_factor"
        factors = torch.tensor(scaling.get(key, ()), dtype=torch.float32, device="cpu")
        if factors.shape != inv_freq.shape:
            raise UnsupportedModelError(f"rope scaling {rope_type!r} needs {dim // 2} {key!r}, not {factors.numel()}")
        return 1.0 / (factors * config.rope_theta**exponents)
    raise UnsupportedModelError(
        f"rope scaling type {rope_type!r} is not supported (supported: {', '.join(SUPPORTED_ROPE_TYPES)})"
    )


def _scaling_param(scaling: dict[str, Any], key: str) -> float:
    if key not in scaling:
        raise UnsupportedModelError(f"rope scaling {scaling!r} lacks the parameter {key!r}")
    return float(scaling[key])


def rope_attention_scaling(config: ModelConfig) -> float:
    """The factor cos and sin are multiplied by: longrope's `attention_factor`, else 1."""
    scaling = config.rope_scaling or {}
    if scaling.get("rope_type") != "longrope":
        return 1.0
    return _scaling_param(scaling, "attention_factor")


def _llama3_inv_freq(inv_freq: torch.Tensor, scaling: dict[str, Any]) -> torch.Tensor:
    """Llama 3.1: long wavelengths divided by `factor`, short ones kept, the band between interpolated."""
    factor = _scaling_param(scaling, "factor")
    low_freq_factor = _scaling_param(scaling, "low_freq_factor")
    high_freq_factor = _scaling_param(scaling, "high_freq_factor")
    old_context_len = _scaling_param(scaling, "original_max_position_embeddings")
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium_freq = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium_freq, smoothed, scaled)


class RotaryEmbedding(nn.Module):
    """Cos/sin tables for a forward pass; holds no parameters.

    Args:
        config: the model (see `rope_inv_freq`).
        theta: see `rope_inv_freq`.

    Raises:
        UnsupportedModelError: see `rope_inv_freq`.
    """

    def __init__(self, config: ModelConfig, *, theta: float | None = None) -> None:
        super().__init__()
        # A plain attribute, not a buffer: the model is built on the meta device and its weights assigned,
        # and this table is derived from the config, never loaded.
        self.inv_freq = rope_inv_freq(config, theta=theta)
        self.attention_scaling = 1.0 if theta is not None else rope_attention_scaling(config)

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Tables for `apply_rope` at `positions` ([T] int64), in `dtype`.

        Returns:
            (cos, signed_sin), each [T, 1, D]; `signed_sin` is -sin on the first half of a head and
            +sin on the second, which folds rotate-half's negation into the table.
        """
        freqs = positions.float()[:, None] * self.inv_freq.to(positions.device)  # [T, D/2]
        sin = freqs.sin()
        cos = freqs.cos()
        if self.attention_scaling != 1.0:
            sin, cos = sin * self.attention_scaling, cos * self.attention_scaling
        signed_sin = torch.cat((-sin, sin), dim=-1)[:, None, :]  # [T, 1, D]
        cos = torch.cat((cos, cos), dim=-1)[:, None, :]  # [T, 1, D]
        return cos.to(dtype), signed_sin.to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """Rotate every head of `x` [T, N, D] by its token's position; returns a new [T, N, D] tensor.

    `x.roll(D // 2)` swaps the two halves of each head, so `roll(x) * signed_sin` is transformers'
    `rotate_half(x) * sin` with the same roundings. Where built, one compiled call does it, rounding alike.
    """
    if elementwise.runs_compiled(x):
        return elementwise.rope(x, cos, signed_sin)
    return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * signed_sin
