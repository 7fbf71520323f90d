"""The compiled extension, loaded once: its functions, or the reason it cannot be used.

The extension is built by `pip install` (setup.py) for the installing machine. When it is missing
(a source tree never built, a build without AVX-512 VNNI), `KERNELS_UNAVAILABLE_REASON` says why and
`runtime.model.quantization` runs torch's kernels instead, logging that reason as it quantizes a model.
"""

from __future__ import annotations

from types import ModuleType

import torch

from runtime.model.kernels.loader import load_extension

_extension, KERNELS_UNAVAILABLE_REASON = load_extension("_quantized_linear")
if _extension is not None and not _extension.has_vnni:
    KERNELS_UNAVAILABLE_REASON = "the extension was built for a CPU without AVX-512 VNNI"


def has_compiled_kernels() -> bool:
    """Whether the compiled kernels are built and usable on this CPU."""
    return KERNELS_UNAVAILABLE_REASON is None


def _require_extension() -> ModuleType:
    if _extension is None or KERNELS_UNAVAILABLE_REASON is not None:
        raise RuntimeError(KERNELS_UNAVAILABLE_REASON)
    return _extension


def int4_linear(
    x: torch.Tensor,
    tiles: torch.Tensor,
    scales: torch.Tensor,
    bases: torch.Tensor,
    activation_bits: int = 16,
    fifth_bits: torch.Tensor | None = None,
) -> torch.Tensor:
    """`x @ W.T` for a 4-bit (or 5-bit) weight W in `Int4Linear`'s tiled layout, activations quantized per group
    of 32.

    Row invariant: each output row is bitwise the same whatever other rows `x` holds.

    Args:
        x: [M, K] contiguous bfloat16, K a multiple of 32.
        tiles: [N / 16, K / 32, 256] uint8 codes (`quantization.pack_int4_tiles`).
        scales: [N / 16, K / 32, 16] bfloat16, or float32 (a file's 4-bit block parameters, kept exact).
        bases: [N / 16, K / 32, 16], the dtype of `scales`: a weight is `code * scale + base`.
        activation_bits: 16 (as exact as bfloat16) or 8 (twice the products per instruction, coarser:
            what an output head's first pass, rescored after, can afford).
        fifth_bits: [N / 16, K / 32, 64] uint8, bit 4 of 5-bit codes (`quantization.pack_fifth_bits`); with
            16-bit activations only.

    Returns:
        [M, N] bfloat16.

    Raises:
        RuntimeError: `activation_bits` other than 16 or 8 (or 8 with `fifth_bits`), or tensors of the wrong
            shape or dtype.
    """
    return _require_extension().int4_linear(x, tiles, scales, bases, activation_bits, fifth_bits)


def block_linear(
    x: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor, bases: torch.Tensor | None, block_size: int
) -> torch.Tensor:
    """`x @ W.T` for a block-code weight W in `BlockCodeLinear`'s tiled layout, activations quantized per group
    of 32 to int16. Row invariant: each output row is bitwise the same whatever other rows `x` holds.

    Args:
        x: [M, K] contiguous bfloat16, K a multiple of 32.
        codes: [N / 16, K / 32, 512] int8 (`block_codes.pack_code_tiles`).
        scales: [N / 16, K / block_size, 16] float32.
        bases: the same shape, or None: a weight is `code * scale + base`.
        block_size: inputs per scale and base, 16 or 32.

    Returns:
        [M, N] bfloat16.

    Raises:
        RuntimeError: a block size other than 16 or 32, or tensors of the wrong shape or dtype.
    """
    return _require_extension().block_linear(x, codes, scales, bases, block_size)


def rescored_logits(first_pass: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, count: int) -> torch.Tensor:
    """An output head's float32 logits: in each row, every first-pass logit at least the row's `count`-th largest
    recomputed exactly (float32 sums in a fixed order, where a matmul's order may follow the shapes), the rest
    widened. Logits tied at the cut are all recomputed, so no tie is broken by position and a row's result
    depends on that row only.

    Args:
        first_pass: [M, V] contiguous bfloat16 approximate logits.
        x: [M, K] contiguous bfloat16 head inputs.
        weight: [V, K] contiguous bfloat16 head weight.
        count: logits per row recomputed, in [1, V].

    Returns:
        [M, V] float32.
    """
    return _require_extension().rescored_logits(first_pass, x, weight, count)
