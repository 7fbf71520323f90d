"""Quantized weights gathered into one memory region backed by 2 MiB pages.

A decode step streams every weight once (SmolLM2-135M in 4 bits: 84 MB), in a few hundred small
buffers. In 4 KiB pages each page of a stream is a TLB miss and a fresh start for the hardware
prefetchers, which stop at page boundaries. Measured on this CPU with one thread (the step's 211
`int4_linear` calls on distinct weights, `benchmarks/int4_kernels.py --step`), the same calls ran
1.2-1.5x faster at one row, 1.15-1.35x at two, 1.1x at four and 1.05x at eight with the weights in
2 MiB pages; the engine's single-stream decode 3-10% faster, its batch of 8 0-4% (the rest of a
step does not change; a busy machine).
Linux gives an anonymous mapping 2 MiB pages only where it is advised to (`MADV_HUGEPAGE`, the
usual `transparent_hugepage=madvise` setting) and only for its 2 MiB-aligned extents, so the buffers
are copied into one private mapping, advised and aligned. Where the platform has no such advice, the
tensors are returned as they are.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
from collections.abc import Sequence

import torch

logger = logging.getLogger(__name__)

#: The x86-64 huge page (a PMD): what `MADV_HUGEPAGE` gives to aligned extents.
HUGE_PAGE_BYTES = 2 << 20
#: Each tensor starts on a cache line, as the kernels' 64-byte loads expect.
ALIGNMENT = 64


def _align(size: int, alignment: int) -> int:
    return -(-size // alignment) * alignment


def in_huge_pages(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Copies of the contiguous CPU `tensors`, each 64-byte aligned, in one mapping advised to use 2 MiB pages.

    The mapping lives as long as any of the returned tensors. Returns `tensors` unchanged (as a list)
    where `madvise(MADV_HUGEPAGE)` is unavailable or refused.

    Raises:
        ValueError: a tensor that is not a contiguous CPU tensor.
    """
    for tensor in tensors:
        if tensor.device.type != "cpu" or not tensor.is_contiguous():
            raise ValueError(f"only contiguous CPU tensors can move to huge pages, not {tensor.device} {tensor.shape}")
    if not tensors or not hasattr(mmap, "MADV_HUGEPAGE"):
        return list(tensors)
    offsets, size = [], 0
    for tensor in tensors:
        offsets.append(size)
        size = _align(size + tensor.numel() * tensor.element_size(), ALIGNMENT)
    size = _align(size, HUGE_PAGE_BYTES)
    # One huge page more than needed, so that the region can start on a 2 MiB boundary.
    region = mmap.mmap(-1, size + HUGE_PAGE_BYTES, flags=mmap.MAP_PRIVATE)
    anchor = ctypes.c_char.from_buffer(region)
    start = -ctypes.addressof(anchor) % HUGE_PAGE_BYTES
    del anchor  # a live ctypes view would pin the mapping's buffer export
    try:
        region.madvise(mmap.MADV_HUGEPAGE, start, size)
    except OSError as exc:  # transparent huge pages disabled ("never")
        logger.info("weights stay in 4 KiB pages: madvise(MADV_HUGEPAGE) failed (%s)", exc)
        region.close()
        return list(tensors)
    memory = torch.frombuffer(region, dtype=torch.uint8, offset=start, count=size)  # keeps `region` alive
    copies = []
    for tensor, offset in zip(tensors, offsets, strict=True):
        num_bytes = tensor.numel() * tensor.element_size()
        copy = memory[offset : offset + num_bytes].view(tensor.dtype).view(tensor.shape)
        copies.append(copy.copy_(tensor))
    return copies
