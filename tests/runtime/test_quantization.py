"""Weight-only int8 / int4 linears: both code paths agree, Q4_1-style weights survive exactly, the swap."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from runtime.errors import UnsupportedModelError
from runtime.model.quantization import (
    INT4_GROUP_SIZE,
    MAX_QUANTIZED_KERNEL_ROWS,
    NUM_RESCORED_LOGITS,
    Int4Linear,
    Int8Linear,
    Quantization,
    QuantizedLinear,
    RescoredHead,
    quantize,
    quantized_layers,
)


def _linear(num_outputs: int, num_inputs: int, *, bias: bool = False, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(num_inputs, num_outputs, bias=bias).to(torch.bfloat16)


#: Each quantized layer kind: int8, int4 on the compiled kernel, int4 on torch's kernel.
FACTORIES: dict[str, Callable[[nn.Linear], QuantizedLinear]] = {
    "int8": Int8Linear.from_linear,
    "int4": Int4Linear.from_linear,
    "int4_torch_kernel": partial(Int4Linear.from_linear, uses_compiled_kernel=False),
}


@pytest.mark.parametrize("kind", FACTORIES)
@pytest.mark.parametrize("bias", [False, True])
def test_kernel_and_dense_paths_agree_and_approximate_the_linear(kind: str, bias: bool) -> None:
    linear = _linear(48, 96, bias=bias)
    quantized = FACTORIES[kind](linear)
    x = torch.randn(MAX_QUANTIZED_KERNEL_ROWS + 9, 96, dtype=torch.bfloat16)
    few = quantized(x[:3])  # the weight-only kernel
    quantized.uses_dense_weights = True
    many = quantized(x)  # dequantize, then the dense kernel
    torch.testing.assert_close(few, many[:3], atol=2e-2, rtol=2e-2)
    expected = linear(x).float()
    relative_error = (many.float() - expected).norm() / expected.norm()
    assert relative_error < (0.02 if kind == "int8" else 0.12)


@pytest.mark.parametrize("kind", FACTORIES)
def test_wide_inputs_run_the_dense_weights_unless_the_kernel_is_row_invariant(kind: str) -> None:
    """torch's kernels cost one GEMV per row, so wide inputs take the dense weights; the compiled int4
    kernel takes any row count, so a row computes alike in a decode batch of any size."""
    quantized = FACTORIES[kind](_linear(48, 96))
    x = torch.randn(MAX_QUANTIZED_KERNEL_ROWS + 1, 96, dtype=torch.bfloat16)
    is_dense = torch.equal(quantized(x), F.linear(x, quantized.dequantize()))
    assert is_dense != (kind == "int4") and quantized.runs_kernel(x) == (kind == "int4")


def test_int4_keeps_q4_1_codes_exactly() -> None:
    """Weights on a 16-level grid per group of 32 (GGUF Q4_1) come back bit for bit."""
    num_outputs, num_inputs = 32, 4 * INT4_GROUP_SIZE
    generator = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 16, (num_outputs, num_inputs // INT4_GROUP_SIZE, INT4_GROUP_SIZE), generator=generator)
    codes[..., 0], codes[..., 1] = 0, 15  # Q4_1 maps each group's minimum to 0 and maximum to 15
    scales = 2.0 ** torch.randint(-8, -4, (num_outputs, num_inputs // INT4_GROUP_SIZE, 1), generator=generator)
    offsets = -8 * scales + torch.randint(-4, 4, scales.shape, generator=generator) * scales
    weight = (codes * scales + offsets).view(num_outputs, num_inputs)
    linear = nn.Linear(num_inputs, num_outputs, bias=False)
    linear.weight.data = weight
    quantized = Int4Linear.from_linear(linear)
    torch.testing.assert_close(quantized.dequantize().float(), weight, atol=0, rtol=0)
    x = torch.randn(2, num_inputs, dtype=torch.bfloat16)
    torch.testing.assert_close(quantized(x).float(), x.float() @ weight.T, atol=0.05, rtol=0.02)


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.ModuleDict({"proj": _linear(32, 64), "odd": _linear(24, 64)})
        self.lm_head = _linear(48, 64)


def test_quantize_swaps_modules_per_mode() -> None:
    int8 = quantize(_Tiny(), Quantization.INT8)
    assert isinstance(int8.body["proj"], Int8Linear) and isinstance(int8.body["odd"], Int8Linear)
    assert isinstance(int8.lm_head, RescoredHead)
    int4 = quantize(_Tiny(), Quantization.INT4)
    assert isinstance(int4.body["proj"], Int4Linear)
    assert isinstance(int4.body["odd"], Int8Linear)  # 24 rows: not a whole tile of 16 for the int4 kernel
    assert isinstance(int4.lm_head, RescoredHead)
    assert quantized_layers(int4) == [int4.body["proj"], int4.body["odd"], int4.lm_head.approximate]
    unchanged = _Tiny()
    assert quantize(unchanged, Quantization.NONE).body["proj"].__class__ is nn.Linear
    assert quantized_layers(unchanged) == []


@pytest.mark.parametrize("kind", FACTORIES)
def test_uses_dense_weights_takes_the_dense_path_for_any_row_count(kind: str) -> None:
    quantized = FACTORIES[kind](_linear(48, 96))
    x = torch.randn(3, 96, dtype=torch.bfloat16)
    dense = F.linear(x, quantized.dequantize())
    assert not quantized.uses_dense_weights and quantized.runs_kernel(x)
    quantized.uses_dense_weights = True  # what the model runner sets for a prefill pass
    assert not quantized.runs_kernel(x) and torch.equal(quantized(x), dense)
    quantized.uses_dense_weights = False
    assert not torch.equal(quantized(x), dense)  # the weight-only kernel runs again


@pytest.mark.parametrize("is_prefill", [False, True])
@pytest.mark.parametrize("num_rows", [1, 3, MAX_QUANTIZED_KERNEL_ROWS + 5])
def test_rescored_head_is_exact_on_its_top_logits(num_rows: int, is_prefill: bool) -> None:
    head = _linear(1024, 64, seed=1)
    rescored = RescoredHead(head)
    rescored.approximate.uses_dense_weights = is_prefill  # the runner sets it on every quantized layer
    x = torch.randn(num_rows, 64, dtype=torch.bfloat16)
    logits = rescored(x)
    assert logits.dtype == torch.float32
    exact = x.float() @ head.weight.float().T  # [N, V], float32 sums of the bfloat16 inputs
    top_ids = exact.topk(NUM_RESCORED_LOGITS // 2, dim=-1).indices
    torch.testing.assert_close(logits.gather(1, top_ids), exact.gather(1, top_ids), atol=1e-4, rtol=1e-5)
    assert torch.equal(logits.argmax(-1), exact.argmax(-1))
    if is_prefill or not rescored.approximate.runs_kernel(x):
        first_pass = head(x).float()  # the dense bfloat16 head
        cut = first_pass.topk(NUM_RESCORED_LOGITS).values[:, -1:]  # ties at the cut may go either way
        tail = first_pass < cut
        assert torch.equal(logits[tail], first_pass[tail])
    else:
        tail_error = (logits - exact).abs().max() / exact.abs().max()
        assert 0 < tail_error < 0.1  # the rest is 4-bit: close, not exact


def test_quantize_needs_bfloat16() -> None:
    with pytest.raises(UnsupportedModelError, match="bfloat16"):
        quantize(_Tiny().float(), Quantization.INT4)
