"""The compiled per-row decoder operations: equal to the torch reference (bitwise where they round alike)
and row-invariant (a row's result is the same alone and in any batch)."""

from __future__ import annotations

import pytest
import torch

from runtime.model.kernels import elementwise
from runtime.model.layers.feed_forward import ACTIVATIONS
from runtime.model.layers.rmsnorm import rms_norm_reference

DTYPES = [torch.bfloat16, torch.float32]


def test_the_extension_is_built_in_this_checkout() -> None:
    assert elementwise.ELEMENTWISE_UNAVAILABLE_REASON is None
    assert elementwise.runs_compiled(torch.zeros(1, dtype=torch.bfloat16))
    assert not elementwise.runs_compiled(torch.zeros(1, dtype=torch.float16))


def test_every_feed_forward_activation_is_compiled() -> None:
    assert set(elementwise.ACTIVATION_CODES) == set(ACTIVATIONS)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_rows", [1, 5, 40])
def test_rms_norm_matches_the_reference(dtype: torch.dtype, num_rows: int) -> None:
    torch.manual_seed(num_rows)
    x = (torch.randn(num_rows, 576) * 3).to(dtype)
    weight = torch.randn(576).to(dtype)
    expected = (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()).to(dtype)
    out = elementwise.rms_norm(x, weight, 1e-5)
    assert out.dtype == dtype and out.shape == x.shape
    tolerance = 1e-2 if dtype == torch.bfloat16 else 1e-5
    torch.testing.assert_close(out.float(), expected.float(), rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(out.float(), rms_norm_reference(x, weight, 1e-5).float(), rtol=2e-2, atol=2e-2)


def test_rms_norm_takes_per_head_strided_rows() -> None:
    qkv = torch.randn(3, 5 * 64, dtype=torch.bfloat16)
    heads = qkv[:, : 4 * 64].view(3, 4, 64)  # rows strided by the row of qkv
    weight = torch.rand(64, dtype=torch.bfloat16)
    expected = elementwise.rms_norm(heads.contiguous(), weight, 1e-6)
    assert torch.equal(elementwise.rms_norm(heads, weight, 1e-6), expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_rows", [1, 5, 40])
def test_add_rms_norm_is_torchs_add_then_the_compiled_norm(dtype: torch.dtype, num_rows: int) -> None:
    torch.manual_seed(num_rows)
    x, delta = (torch.randn(num_rows, 576) * 3).to(dtype), torch.randn(num_rows, 576).to(dtype)
    weight = torch.randn(576).to(dtype)
    total, normed = elementwise.add_rms_norm(x, delta, weight, 1e-5)
    assert torch.equal(total, x + delta)
    assert torch.equal(normed, elementwise.rms_norm(x + delta, weight, 1e-5))
    for row in range(num_rows):  # row invariant
        alone = elementwise.add_rms_norm(x[row : row + 1], delta[row : row + 1], weight, 1e-5)
        assert torch.equal(alone[1], normed[row : row + 1])


def test_add_rms_norm_refuses_mismatched_rows() -> None:
    x, weight = torch.randn(3, 64, dtype=torch.bfloat16), torch.ones(64, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="delta must be"):
        elementwise.add_rms_norm(x, torch.randn(2, 64, dtype=torch.bfloat16), weight, 1e-6)
    with pytest.raises(RuntimeError, match="delta must be"):
        elementwise.add_rms_norm(x, torch.randn(3, 64), weight, 1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("width", [1536, 40])  # whole vectors of 16, and a scalar tail
def test_gated_activation_matches_the_reference(dtype: torch.dtype, activation: str, width: int) -> None:
    torch.manual_seed(0)
    gate_up = (torch.randn(7, 2 * width) * 4).to(dtype)
    gate_up[0, :4] = torch.tensor([-200.0, 200.0, 0.0, -0.0])  # saturating and zero inputs
    gate, up = gate_up.chunk(2, dim=-1)
    expected = ACTIVATIONS[activation](gate) * up
    out = elementwise.gated_activation(gate_up, activation)
    tolerance = 1e-2 if dtype == torch.bfloat16 else 1e-5
    torch.testing.assert_close(out.float(), expected.float(), rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rope_rounds_as_the_torch_ops(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    qkv = torch.randn(6, (9 + 3 + 3) * 64).to(dtype)
    x = qkv[:, : 12 * 64].view(6, 12, 64)  # queries and keys of a fused projection: strided tokens
    angles = torch.rand(6, 1, 32) * 10
    cos = torch.cat((angles.cos(), angles.cos()), -1).to(dtype)
    signed_sin = torch.cat((-angles.sin(), angles.sin()), -1).to(dtype)
    expected = x * cos + x.roll(32, dims=-1) * signed_sin
    assert torch.equal(elementwise.rope(x, cos, signed_sin), expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rows_do_not_depend_on_the_batch(dtype: torch.dtype) -> None:
    torch.manual_seed(1)
    x = torch.randn(33, 576).to(dtype)
    weight = torch.randn(576).to(dtype)
    batched_norm = elementwise.rms_norm(x, weight, 1e-5)
    batched_gated = elementwise.gated_activation(x, "silu")
    for row in (0, 7, 32):
        assert torch.equal(elementwise.rms_norm(x[row : row + 1], weight, 1e-5), batched_norm[row : row + 1])
        assert torch.equal(elementwise.gated_activation(x[row : row + 1], "silu"), batched_gated[row : row + 1])


def test_wrong_inputs_are_refused_with_the_reason() -> None:
    with pytest.raises(RuntimeError, match="weight must be"):
        elementwise.rms_norm(torch.randn(2, 8), torch.ones(4), 1e-5)
    with pytest.raises(RuntimeError, match="bfloat16 or float32"):
        elementwise.gated_activation(torch.randn(2, 8, dtype=torch.float16), "silu")
