"""Quantized weights in 2 MiB pages: equal copies, aligned, in a mapping Linux was advised to back with huge
pages, and `quantize` placing every int4 layer's buffers there without changing a layer's output."""

from __future__ import annotations

import mmap
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from runtime.model.huge_pages import ALIGNMENT, in_huge_pages
from runtime.model.quantization import Int4Linear, Quantization, quantize

pytestmark = pytest.mark.skipif(not hasattr(mmap, "MADV_HUGEPAGE"), reason="no madvise(MADV_HUGEPAGE) here")


def _mapping_flags(address: int) -> tuple[int, set[str]]:
    """The start and VmFlags of the mapping of this process that holds `address` (/proc/self/smaps)."""
    for entry in re.split(r"\n(?=[0-9a-f]+-[0-9a-f]+ )", Path("/proc/self/smaps").read_text()):
        low, high = (int(bound, 16) for bound in entry.split()[0].split("-"))
        if low <= address < high:
            match = re.search(r"VmFlags:(.*)", entry)
            assert match is not None
            return low, set(match.group(1).split())
    raise AssertionError(f"no mapping holds {address:#x}")


def test_copies_are_equal_aligned_and_in_one_huge_page_mapping() -> None:
    tensors = [
        torch.randn(5, 7).to(torch.bfloat16),
        torch.randint(0, 256, (3, 1000), dtype=torch.uint8),
        torch.zeros(0),
        torch.tensor(3.0),
    ]
    copies = in_huge_pages(tensors)
    for tensor, copy in zip(tensors, copies, strict=True):
        assert copy.dtype == tensor.dtype and copy.shape == tensor.shape and torch.equal(copy, tensor)
        assert copy.data_ptr() % ALIGNMENT == 0
        assert copy.numel() == 0 or copy.data_ptr() != tensor.data_ptr()  # empty tensors point nowhere
    starts_and_flags = [_mapping_flags(copy.data_ptr()) for copy in copies if copy.numel()]
    assert len({start for start, _ in starts_and_flags}) == 1
    assert all("hg" in flags for _, flags in starts_and_flags)  # madvise(MADV_HUGEPAGE) applied


def test_rejects_a_non_contiguous_tensor() -> None:
    with pytest.raises(ValueError, match="contiguous CPU tensors"):
        in_huge_pages([torch.zeros(4, 4).t()])


def test_quantize_places_int4_buffers_in_huge_pages_without_changing_outputs() -> None:
    torch.manual_seed(0)
    first, second = nn.Linear(96, 64, bias=False), nn.Linear(64, 32)
    model = nn.Sequential(first, nn.ReLU(), second).to(torch.bfloat16)
    x = torch.randn(3, 96, dtype=torch.bfloat16)
    expected = nn.Sequential(Int4Linear.from_linear(first), nn.ReLU(), Int4Linear.from_linear(second))(x)
    quantize(model, Quantization.INT4, head_names=())
    layers = [module for module in model.modules() if isinstance(module, Int4Linear)]
    assert len(layers) == 2
    buffers = [t for layer in layers for t in (layer.tiles, layer.scales, layer.bases)]
    assert all("hg" in _mapping_flags(t.data_ptr())[1] for t in buffers)
    assert torch.equal(model(x), expected)
