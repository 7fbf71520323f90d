"""The compiled 4-bit kernel: built in this checkout, equal to the float product on exact inputs, and
within int16 activation rounding of torch's int4 kernel (the reference) at every row count."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from runtime.model import kernels
from runtime.model.quantization import MAX_COMPILED_KERNEL_ROWS, Int4Linear, quantized_layers


def _int4(num_outputs: int, num_inputs: int, *, seed: int = 0) -> Int4Linear:
    torch.manual_seed(seed)
    return Int4Linear.from_linear(nn.Linear(num_inputs, num_outputs, bias=False).to(torch.bfloat16))


def _torch_reference(layer: Int4Linear, x: torch.Tensor) -> torch.Tensor:
    return torch.ops.aten._weight_int4pack_mm_for_cpu(x, layer.packed, 32, layer.scales_and_offsets)


def _exact_weight(layer: Int4Linear) -> torch.Tensor:
    """`code * scale + base` in float64 (the kernel's weights; `dequantize()` rounds them to bfloat16)."""
    codes = torch.stack((layer.nibbles & 15, layer.nibbles >> 4), dim=-1).view(layer.nibbles.shape[0], -1, 32)
    weight = codes.double() * layer.scales.double() + layer.bases.double()
    return weight.view(layer.nibbles.shape[0], -1)


def test_the_extension_is_built_in_this_checkout() -> None:
    assert kernels.has_compiled_kernels(), kernels.KERNELS_UNAVAILABLE_REASON


def _quantized_activations(x: torch.Tensor) -> torch.Tensor:
    """x as the kernel sees it: per group of 32, float32 step absmax / 32767 times round(x / step)."""
    groups = x.float().view(x.shape[0], -1, 32)
    step = groups.abs().amax(dim=-1, keepdim=True) / 32767
    codes = torch.round(groups * torch.where(step > 0, 1 / step, torch.zeros_like(step)))
    return (codes.double() * step.double()).view(x.shape)


@pytest.mark.parametrize("num_rows", [1, 3, 8, 9, 21])
@pytest.mark.parametrize(("num_outputs", "num_inputs"), [(96, 96), (64, 576), (16, 1536)])
def test_equals_the_product_with_int16_activations(num_rows: int, num_outputs: int, num_inputs: int) -> None:
    layer = _int4(num_outputs, num_inputs)
    x = torch.randn(num_rows, num_inputs, dtype=torch.bfloat16)
    x[0, :32] = 0.0  # an all-zero group has step 0
    weight = _exact_weight(layer)
    # The code part uses the quantized activations, the base part their exact group sums.
    groups = weight.shape[1] // 32
    bases = layer.bases.double().view(-1, groups)
    sums = x.double().view(num_rows, groups, 32).sum(-1)
    expected = _quantized_activations(x) @ (weight - bases.repeat_interleave(32, dim=1)).T + sums @ bases.T
    out = kernels.int4_linear(x, layer.nibbles, layer.scales, layer.bases).double()
    # Float32 sums then bfloat16 rounding: within a bfloat16 step of the output's magnitude.
    assert (out - expected).abs().max().item() <= 2**-8 * expected.abs().max().item()


@pytest.mark.parametrize("num_rows", [1, 2, 5, 8, 9, 40])
def test_within_activation_rounding_of_torch_int4_kernel(num_rows: int) -> None:
    layer = _int4(320, 576)
    x = torch.randn(num_rows, 576, dtype=torch.bfloat16)
    reference = _torch_reference(layer, x).float()
    out = kernels.int4_linear(x, layer.nibbles, layer.scales, layer.bases).float()
    # Both round to bfloat16 (torch's kernel also each product's input); int16 activations add ~1e-4.
    assert ((out - reference).norm() / reference.norm()).item() < 0.01
    assert (out - reference).abs().max().item() < 0.02 * reference.abs().max().item()


def test_a_layer_runs_the_compiled_kernel_on_one_row_else_torch_s() -> None:
    layer = _int4(64, 96)
    x = torch.randn(MAX_COMPILED_KERNEL_ROWS + 1, 96, dtype=torch.bfloat16)
    assert layer.uses_compiled_kernel
    one_row = x[:MAX_COMPILED_KERNEL_ROWS]
    torch.testing.assert_close(layer(one_row), kernels.int4_linear(one_row, layer.nibbles, layer.scales, layer.bases))
    torch.testing.assert_close(layer(x), _torch_reference(layer, x))
    layer.uses_compiled_kernel = False
    torch.testing.assert_close(layer(one_row), _torch_reference(layer, one_row))


def test_quantized_model_layers_default_to_the_compiled_kernel() -> None:
    from runtime.model.quantization import Quantization, quantize

    model = nn.Sequential(nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 128)).to(torch.bfloat16)
    layers = quantized_layers(quantize(model, Quantization.INT4, head_names=()))
    assert layers and all(isinstance(layer, Int4Linear) and layer.uses_compiled_kernel for layer in layers)
