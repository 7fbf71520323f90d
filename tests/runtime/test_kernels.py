"""The compiled kernels: built in this checkout, the 4-bit one equal to the float product of its quantized
activations (int16 or int8, reimplemented here in torch), within int16 activation rounding of torch's int4
kernel (the reference) at every row count, and both row invariant: a row's output is bitwise the same
whatever other rows share the call."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from runtime.model import kernels
from runtime.model.quantization import (
    Int4Linear,
    Quantization,
    RescoredHead,
    pack_int4_tiles,
    quantize,
    quantized_layers,
    unpack_int4_tiles,
)

ROW_COUNTS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 33]


def _linear(num_outputs: int, num_inputs: int, *, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(num_inputs, num_outputs, bias=False).to(torch.bfloat16)


def _kernel(layer: Int4Linear, x: torch.Tensor, activation_bits: int = 16) -> torch.Tensor:
    return kernels.int4_linear(x, layer.tiles, layer.scales, layer.bases, activation_bits)


def _group_parameters(layer: Int4Linear) -> tuple[torch.Tensor, torch.Tensor]:
    """Scales and bases as [N, K / 32] float64."""
    scales, bases = (t.transpose(1, 2).reshape(-1, t.shape[1]).double() for t in (layer.scales, layer.bases))
    return scales, bases


def test_the_extension_is_built_in_this_checkout() -> None:
    assert kernels.has_compiled_kernels(), kernels.KERNELS_UNAVAILABLE_REASON


def test_tiles_round_trip_the_codes() -> None:
    codes = torch.randint(0, 16, (48, 96), generator=torch.Generator().manual_seed(0))
    tiles = pack_int4_tiles(codes)
    assert tiles.shape == (3, 3, 256) and tiles.dtype == torch.uint8
    assert torch.equal(unpack_int4_tiles(tiles), codes.to(torch.uint8))


def _quantized_activations(x: torch.Tensor, bits: int) -> torch.Tensor:
    """x as the kernel sees it: per group of 32, float32 step absmax / (2^(bits - 1) - 1) times round(x / step)."""
    groups = x.float().view(x.shape[0], -1, 32)
    step = groups.abs().amax(dim=-1, keepdim=True) / (2 ** (bits - 1) - 1)
    codes = torch.round(groups * torch.where(step > 0, 1 / step, torch.zeros_like(step)))
    return (codes.double() * step.double()).view(x.shape)


@pytest.mark.parametrize("activation_bits", [16, 8])
@pytest.mark.parametrize("num_rows", [1, 3, 5, 8, 9, 21])
@pytest.mark.parametrize(("num_outputs", "num_inputs"), [(96, 96), (80, 576), (16, 1536)])
def test_equals_the_product_with_quantized_activations(
    num_rows: int, num_outputs: int, num_inputs: int, activation_bits: int
) -> None:
    layer = Int4Linear.from_linear(_linear(num_outputs, num_inputs))
    x = torch.randn(num_rows, num_inputs, dtype=torch.bfloat16)
    x[0, :32] = 0.0  # an all-zero group has step 0
    x[-1, 32:64] *= 50  # an outlier group
    scales, bases = _group_parameters(layer)  # [N, K / 32]
    codes = layer.codes().double()  # [N, K]
    quantized = _quantized_activations(x, activation_bits)
    # The code part uses the quantized activations; the base part int16's exact group sums, int8's quantized
    # ones (against exact sums the uncentred codes would multiply int8's rounding error).
    sums = (x.double() if activation_bits == 16 else quantized).view(num_rows, -1, 32).sum(-1)  # [M, K / 32]
    expected = quantized @ (codes * scales.repeat_interleave(32, dim=1)).T + sums @ bases.T
    out = _kernel(layer, x, activation_bits).double()
    # Float32 sums then bfloat16 rounding: within a bfloat16 step of the output's magnitude.
    assert (out - expected).abs().max().item() <= 2**-8 * expected.abs().max().item()


@pytest.mark.parametrize("num_rows", [1, 2, 5, 8, 9, 40])
def test_within_activation_rounding_of_torch_int4_kernel(num_rows: int) -> None:
    linear = _linear(320, 576)
    layer, reference = (Int4Linear.from_linear(linear, uses_compiled_kernel=flag) for flag in (True, False))
    assert layer.uses_compiled_kernel and not reference.uses_compiled_kernel
    x = torch.randn(num_rows, 576, dtype=torch.bfloat16)
    expected = torch.ops.aten._weight_int4pack_mm_for_cpu(x, reference.packed, 32, reference.scales_and_offsets)
    out, expected = layer(x).float(), expected.float()
    # Both round to bfloat16 (torch's kernel also each product's input); int16 activations add ~1e-4.
    assert ((out - expected).norm() / expected.norm()).item() < 0.01
    assert (out - expected).abs().max().item() < 0.02 * expected.abs().max().item()


def test_layer_runs_the_compiled_kernel_at_any_row_count_unless_prefill() -> None:
    layer = Int4Linear.from_linear(_linear(64, 96))
    assert layer.packed is None and layer.scales_and_offsets is None  # no second copy of the codes
    x = torch.randn(40, 96, dtype=torch.bfloat16)
    assert torch.equal(layer(x), _kernel(layer, x))
    layer.uses_dense_weights = True  # a prefill pass
    assert torch.equal(layer(x), F.linear(x, layer.dequantize()))


@pytest.mark.parametrize("count", [1, 7, 64, 300])
def test_rescored_logits_recompute_each_rows_largest_first_pass_logits_and_ties_exactly(count: int) -> None:
    torch.manual_seed(0)
    weight = torch.randn(300, 80, dtype=torch.bfloat16)  # 80 inputs: a masked tail of 16
    x = torch.randn(5, 80, dtype=torch.bfloat16)
    first_pass = (torch.randn(5, 300) * 3).round().to(torch.bfloat16)  # many ties at the cut
    out = kernels.rescored_logits(first_pass, x, weight, count)
    # the choice: every logit at least the count-th largest, ties at the cut included
    is_chosen = first_pass >= first_pass.topk(count, dim=-1).values[:, -1:]
    assert (is_chosen.sum(-1) > count).any() or count == 300  # the test does hold ties at the cut
    assert torch.equal(out[~is_chosen], first_pass.float()[~is_chosen])
    exact = (x.double() @ weight.double().T)[is_chosen]
    assert (out[is_chosen].double() - exact).abs().max().item() <= 2**-16 * exact.abs().max().item()
    for row in range(5):  # row invariant
        assert torch.equal(
            out[row : row + 1], kernels.rescored_logits(first_pass[row : row + 1], x[row : row + 1], weight, count)
        )


def test_rescored_logits_refuse_a_count_outside_the_head() -> None:
    weight, x = torch.randn(300, 80, dtype=torch.bfloat16), torch.randn(2, 80, dtype=torch.bfloat16)
    first_pass = torch.randn(2, 300, dtype=torch.bfloat16)
    for count in (0, 301):
        with pytest.raises(RuntimeError, match="count must be in"):
            kernels.rescored_logits(first_pass, x, weight, count)
    with pytest.raises(RuntimeError, match="first_pass must be"):
        kernels.rescored_logits(first_pass[:1], x, weight, 5)


def test_int8_activations_are_coarser_than_int16_ones() -> None:
    layer = Int4Linear.from_linear(_linear(256, 576))
    x = torch.randn(8, 576, dtype=torch.bfloat16)
    scales, bases = _group_parameters(layer)
    exact = (
        x.double()
        @ (layer.codes().double() * scales.repeat_interleave(32, dim=1) + bases.repeat_interleave(32, dim=1)).T
    )
    errors = {bits: ((_kernel(layer, x, bits).double() - exact).norm() / exact.norm()).item() for bits in (16, 8)}
    assert errors[16] < 0.005 < errors[8] < 0.05  # int16: bfloat16 output rounding; int8: ~1% more


def test_int4_linear_refuses_other_activation_widths() -> None:
    layer = Int4Linear.from_linear(_linear(16, 32))
    with pytest.raises(RuntimeError, match="activation_bits must be 16 or 8, not 4"):
        _kernel(layer, torch.randn(1, 32, dtype=torch.bfloat16), 4)


@pytest.mark.parametrize("activation_bits", [16, 8])
@pytest.mark.parametrize("num_rows", ROW_COUNTS)
def test_int4_linear_is_row_invariant(num_rows: int, activation_bits: int) -> None:
    """208 outputs: 13 tiles, so blocks of 5 to 8 rows take tiles in pairs and one alone."""
    layer = Int4Linear.from_linear(_linear(208, 576), activation_bits=activation_bits)
    x = torch.randn(num_rows, 576, dtype=torch.bfloat16)
    out = layer(x)
    for row in range(num_rows):
        assert torch.equal(out[row : row + 1], layer(x[row : row + 1])), row


@pytest.mark.parametrize("num_rows", ROW_COUNTS)
def test_rescored_head_is_row_invariant_outside_prefill(num_rows: int) -> None:
    head = RescoredHead(_linear(4096, 576, seed=1))
    assert isinstance(head.approximate, Int4Linear) and head.approximate.activation_bits == 8
    x = torch.randn(num_rows, 576, dtype=torch.bfloat16)
    out = head(x)
    for row in range(num_rows):
        assert torch.equal(out[row : row + 1], head(x[row : row + 1])), row


def test_quantized_model_layers_default_to_the_compiled_kernel() -> None:
    model = nn.Sequential(nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 128)).to(torch.bfloat16)
    layers = quantized_layers(quantize(model, Quantization.INT4, head_names=()))
    assert layers and all(isinstance(layer, Int4Linear) and layer.uses_compiled_kernel for layer in layers)
