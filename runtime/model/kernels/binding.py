"""The compiled extension, loaded once: its functions, or the reason it cannot be used.

The extension is built by `pip install` (setup.py) for the installing machine. When it is missing
(a source tree never built, a build without AVX-512 VNNI), `KERNELS_UNAVAILABLE_REASON` says why and
`runtime.model.quantization` runs torch's kernels instead, logging that reason as it quantizes a model.
"""

from __future__ import annotations

from types import ModuleType

import torch

KERNELS_UNAVAILABLE_REASON: str | None
_extension: ModuleType | None
try:
    from runtime.model.kernels import _quantized_linear
except ImportError as exc:  # not built, or built against another torch
    _extension = None
    KERNELS_UNAVAILABLE_REASON = f"the compiled extension did not load ({exc}); run scripts/install.sh to build it"
else:
    _extension = _quantized_linear
    KERNELS_UNAVAILABLE_REASON = (
        None if _quantized_linear.has_vnni else "the extension was built for a CPU without AVX-512 VNNI"
    )


def has_compiled_kernels() -> bool:
    """Whether the compiled kernels are built and usable on this CPU."""
    return KERNELS_UNAVAILABLE_REASON is None


def int4_linear(x: torch.Tensor, nibbles: torch.Tensor, scales: torch.Tensor, bases: torch.Tensor) -> torch.Tensor:
    """`x @ W.T` for a 4-bit weight W stored as `Int4Linear` stores it, activations quantized to int16 per 32.

    Args:
        x: [M, K] contiguous bfloat16, K a multiple of 32.
        nibbles: [N, K / 2] uint8 codes, N a multiple of 4.
        scales: [N, K / 32, 1] bfloat16.
        bases: [N, K / 32, 1] bfloat16: a weight is `code * scale + base`.

    Returns:
        [M, N] bfloat16.
    """
    if _extension is None:
        raise RuntimeError(KERNELS_UNAVAILABLE_REASON)
    return _extension.int4_linear(x, nibbles, scales, bases)
