"""Compiled CPU kernels, built by the package's install, and why they may be absent.

`binding` (the 4-bit and block-code linear layers and the head's exact rescoring, `quantized_linear.cpp`),
`attention` (paged attention of decode and verify passes, `paged_attention.cpp`) and `elementwise`
(RMSNorm, gated activations, RoPE, `elementwise.cpp`). Each output row of each of them depends on
that row only, never on what else shares the call: decode and verify passes are batch invariant.
"""

from runtime.model.kernels.binding import (
    KERNELS_UNAVAILABLE_REASON,
    block_linear,
    has_compiled_kernels,
    int4_linear,
    rescored_logits,
)

__all__ = ["KERNELS_UNAVAILABLE_REASON", "block_linear", "has_compiled_kernels", "int4_linear", "rescored_logits"]
