"""Compiled CPU kernels (built from `quantized_linear.cpp` by the package's install) and why they may be absent."""

from runtime.model.kernels.binding import KERNELS_UNAVAILABLE_REASON, has_compiled_kernels, int4_linear

__all__ = ["KERNELS_UNAVAILABLE_REASON", "has_compiled_kernels", "int4_linear"]
