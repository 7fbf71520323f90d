"""Block-code layers, GGUF's block formats kept as their stored codes: every format's codes give its dequantized
tensor bitwise; a GGUF file of mixed formats hands its codes over under its weights' names; the compiled kernel
equals the 4-bit kernel on 4-bit codes and the float product of its quantized activations otherwise, and is row
invariant; a model built with `Quantization.STORED` multiplies the file's very weights, its decode plan bitwise
its modules; loading picks STORED for GGUF files of block formats wider than 4 bits."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType
from gguf.quants import dequantize, quantize

import runtime
import runtime.launch
from runtime.errors import CorruptModelError, RequestError, UnsupportedModelError
from runtime.loading import Checkpoint, load_checkpoint
from runtime.loading.gguf_blocks import BLOCK_FORMATS, block_codes
from runtime.model import kernels
from runtime.model.architectures import Quantization, build_model
from runtime.model.block_codes import BlockCodeLinear, narrow_code_layer, pack_code_tiles, unpack_code_tiles
from runtime.model.quantization import (
    Int4Linear,
    RescoredHead,
    pack_fifth_bits,
    pack_int4_tiles,
    unpack_fifth_bits,
    unpack_int4_tiles,
)
from runtime.model.runner import ForwardBatch, ModelRunner
from tests.runtime.ggml_reference import random_k_blocks
from tests.runtime.test_decode_plan import _assert_plan_gives_the_modules_logits
from tests.runtime.test_kernels import _quantized_activations
from tests.runtime.tiny_gguf import TinySpec, tiny_hf_weights, write_tiny_gguf

T = GGMLQuantizationType
pytestmark = pytest.mark.skipif(not kernels.has_compiled_kernels(), reason=str(kernels.KERNELS_UNAVAILABLE_REASON))

#: Every block format: fused q/k/v mixes blocks of 32 with a base (Q4_K), without (Q5_0) and Q6_K's blocks of
#: 16; gate/up a 4-bit and a 5-bit format with bases (the 5-bit layer); 4-bit matrices alone (layer 0's Q4_0,
#: layer 1's Q4_1 and Q4_K) take the 4-bit kernel.
MIXED_TYPES = {
    "attn_q.weight": T.Q4_K,
    "attn_k.weight": T.Q5_0,
    "attn_v.weight": T.Q6_K,
    "attn_output.weight": T.Q8_0,
    "ffn_gate.weight": T.Q4_1,
    "ffn_up.weight": T.Q5_K,
    "ffn_down.weight": T.Q4_0,
    "blk.1.attn_output.weight": T.Q4_1,
    "blk.1.ffn_down.weight": T.Q4_K,
}
MIXED_SPEC = TinySpec(hidden_size=256, num_heads=4, num_kv_heads=2, intermediate_size=256)


def _raw_blocks(tensor_type: GGMLQuantizationType, shape: tuple[int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if tensor_type.name.endswith("_K"):
        return random_k_blocks(tensor_type.name, shape[0], shape[1] // 256, rng)
    return quantize(rng.standard_normal(shape).astype(np.float32), tensor_type)


@pytest.mark.parametrize("tensor_type", sorted(BLOCK_FORMATS, key=lambda t: t.name))
def test_codes_give_the_dequantized_tensor_bitwise(tensor_type: GGMLQuantizationType) -> None:
    raw = _raw_blocks(tensor_type, (5, 512), seed=tensor_type.value)
    codes, scales, bases = block_codes(raw, tensor_type, (5, 512), "w")
    assert codes.dtype == np.int8 and codes.shape == (5, 512) and scales.shape == bases.shape == (5, 32)
    rebuilt = (codes.astype(np.float32).reshape(5, 32, 16) * scales[..., None] + bases[..., None]).reshape(5, 512)
    assert np.array_equal(rebuilt, dequantize(raw, tensor_type))
    assert len(np.unique(codes)) > 8  # codes, not a constant: the scale did not absorb them


def test_a_block_tensor_of_the_wrong_size_is_corrupt() -> None:
    raw = _raw_blocks(T.Q8_0, (4, 64), seed=0)
    with pytest.raises(CorruptModelError, match="'blk.0.attn_q.weight'.*Q8_0"):
        block_codes(raw[:, :-34], T.Q8_0, (4, 64), "blk.0.attn_q.weight")


@pytest.fixture(scope="module")
def mixed_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mixed") / "mixed.gguf"
    return write_tiny_gguf(path, MIXED_SPEC, tiny_hf_weights(MIXED_SPEC), layer_tensor_types=MIXED_TYPES)


@pytest.fixture(scope="module")
def mixed(mixed_gguf: Path) -> Checkpoint:
    return load_checkpoint(mixed_gguf)


def test_a_checkpoints_codes_are_its_weights_under_the_same_names(mixed: Checkpoint) -> None:
    """Each of the three arrays goes through the weights' renames and llama's q/k row order."""
    assert mixed.stored_bits == 8 and mixed.block_codes is not None
    codes = mixed.block_codes()
    matrices = {name for name, weight in mixed.weights.items() if weight.dim() == 2 and ".layers." in name}
    assert set(codes) == matrices and len(matrices) == 7 * MIXED_SPEC.num_layers
    for name, (layer_codes, scales, bases) in codes.items():
        rows, num_inputs = layer_codes.shape
        rebuilt = layer_codes.astype(np.float32).reshape(rows, -1, 16) * scales[..., None] + bases[..., None]
        assert np.array_equal(rebuilt.reshape(rows, num_inputs), mixed.weights[name].numpy()), name


def _untiled(parameters: torch.Tensor) -> torch.Tensor:
    return parameters.transpose(1, 2).reshape(-1, parameters.shape[1])


def _float_weight(layer: BlockCodeLinear | Int4Linear) -> torch.Tensor:
    """The layer's weight in float32: code * scale + base, as the file's dequantization computes it."""
    codes = layer.codes()
    block_size = layer.block_size if isinstance(layer, BlockCodeLinear) else 32
    weight = codes.float().view(codes.shape[0], -1, block_size) * _untiled(layer.scales.float())[..., None]
    if layer.bases is not None:
        weight = weight + _untiled(layer.bases.float())[..., None]
    return weight.view(codes.shape)


def test_a_stored_model_multiplies_the_files_weights(mixed: Checkpoint) -> None:
    assert mixed.block_codes is not None
    model = build_model(
        mixed.config,
        dict(mixed.weights),
        dtype=torch.bfloat16,
        quantization=Quantization.STORED,
        block_codes=mixed.block_codes(),
    )
    assert isinstance(model.lm_head, RescoredHead)
    for i, block in enumerate(model.layers):
        hf = f"model.layers.{i}."
        fused = {
            block.attn.qkv: [hf + f"self_attn.{p}_proj.weight" for p in "qkv"],
            block.attn.o_proj: [hf + "self_attn.o_proj.weight"],
            block.ffn.gate_up: [hf + "mlp.gate_proj.weight", hf + "mlp.up_proj.weight"],
            block.ffn.down: [hf + "mlp.down_proj.weight"],
        }
        for layer, names in fused.items():
            assert isinstance(layer, (BlockCodeLinear, Int4Linear))
            assert torch.equal(_float_weight(layer), torch.cat([mixed.weights[name] for name in names]))
        # Q6_K's blocks of 16 keep the fused q/k/v at 16; Q8_0 has no base; 4-bit codes alone take the 4-bit
        # layer, with float32 parameters (Q4_0's codes moved up by 8, its base -8 scales), Q4_1 beside Q5_K the
        # same layer with fifth bits.
        assert (block.attn.qkv.block_size, block.attn.qkv.bases is not None) == (16, True)
        assert isinstance(block.ffn.gate_up, Int4Linear) and block.ffn.gate_up.fifth_bits is not None
        four_bit = [block.ffn.down] + ([block.attn.o_proj] if i == 1 else [])
        assert all(isinstance(layer, Int4Linear) and layer.fifth_bits is None for layer in four_bit)
        nibble_layers = [*four_bit, block.ffn.gate_up]
        assert all(layer.scales.dtype == torch.float32 for layer in nibble_layers)
        if i == 0:
            assert (block.attn.o_proj.block_size, block.attn.o_proj.bases) == (32, None)


def test_a_moe_files_experts_run_on_their_stored_codes(tmp_path: Path) -> None:
    """A mixture-of-experts file's stacked experts (Q4_0 gate and up, Q8_0 down) become one layer per expert
    matrix on the file's codes, the stacked bfloat16 copy dropped, its weights the file's."""
    spec = dataclasses.replace(MIXED_SPEC, num_experts=4, num_experts_per_tok=2, intermediate_size=128)
    types = {"ffn_gate_exps.weight": T.Q4_0, "ffn_up_exps.weight": T.Q4_0, "ffn_down_exps.weight": T.Q8_0}
    path = write_tiny_gguf(tmp_path / "moe.gguf", spec, tiny_hf_weights(spec), layer_tensor_types=types)
    checkpoint = load_checkpoint(path)
    assert checkpoint.block_codes is not None
    model = build_model(
        checkpoint.config,
        checkpoint.weights,
        dtype=torch.bfloat16,
        quantization=Quantization.STORED,
        block_codes=checkpoint.block_codes(),
    )
    for i, block in enumerate(model.layers):
        moe = block.ffn
        assert moe.gate_up_layers is not None and moe.down_layers is not None
        assert not hasattr(moe, "experts_gate_up") and not hasattr(moe, "experts_down")
        expert = f"model.layers.{i}.block_sparse_moe.experts.{{e}}."
        for e in range(spec.num_experts):
            gate_up, down = moe.gate_up_layers[e], moe.down_layers[e]
            assert isinstance(gate_up, Int4Linear) and isinstance(down, BlockCodeLinear)
            w1, w3, w2 = (
                checkpoint.weights[expert.format(e=e) + name] for name in ("w1.weight", "w3.weight", "w2.weight")
            )
            assert torch.equal(_float_weight(gate_up), torch.cat([w1, w3]))
            assert torch.equal(_float_weight(down), w2)
    reference = build_model(checkpoint.config, checkpoint.weights, dtype=torch.float32)
    tokens = [5, 77, 130, 9, 41, 200, 12, 3]
    logits, expected = (_prefill(m, tokens) for m in (model, reference))
    assert torch.nn.functional.cosine_similarity(logits, expected, dim=-1).min() > 0.99


def _prefill(model: torch.nn.Module, tokens: list[int]) -> torch.Tensor:
    """Every position's logits of one decode-path pass (no dense prefill weights)."""
    runner = ModelRunner(model, num_blocks=4, block_size=16)
    return runner.forward(ForwardBatch([tokens], [0], [[0]], all_logits=True))


def test_a_stored_models_decode_plan_gives_its_modules_logits_bitwise(mixed_gguf: Path) -> None:
    engine = runtime.load(mixed_gguf)
    assert isinstance(engine.runner.model.layers[0].attn.qkv, BlockCodeLinear)  # the default for this file
    _assert_plan_gives_the_modules_logits(engine.runner)


def test_a_stored_model_is_batch_invariant(mixed_gguf: Path) -> None:
    """A verify pass scores each position as the one-token step would, alone or beside another sequence:
    what speculative decoding's exactness rests on (tests/runtime/test_batch_invariance.py, for 4-bit weights)."""
    runner = runtime.load(mixed_gguf).runner
    prompt, other, tokens = [5, 77, 130, 9, 41, 200], [12, 3, 250], [61, 8, 99, 150, 7]
    table, other_table = list(range(0, 4)), list(range(4, 8))
    runner.forward(ForwardBatch([prompt, other], [0, 0], [table, other_table], is_prefill=True))
    steps = [runner.forward(ForwardBatch([[token]], [len(prompt) + i], [table]))[0] for i, token in enumerate(tokens)]
    verify = runner.forward(
        ForwardBatch([tokens, [44]], [len(prompt), len(other)], [table, other_table], all_logits=True)
    )
    for i, row in enumerate(steps):
        assert torch.equal(verify[i], row), f"position {i} rounds differently in the verify pass"


def test_loading_keeps_block_codes_only_where_they_are_the_exact_choice(mixed_gguf: Path) -> None:
    """bfloat16 by default; float32 keeps the dense weights; the embedded 4-bit model stays INT4."""
    assert isinstance(runtime.load(mixed_gguf, dtype="float32").runner.model.layers[0].attn.qkv, torch.nn.Linear)
    assert isinstance(runtime.load().runner.model.layers[0].attn.qkv, Int4Linear)


def test_stored_quantization_needs_block_codes(mixed: Checkpoint) -> None:
    with pytest.raises(UnsupportedModelError, match="block codes"):
        build_model(mixed.config, dict(mixed.weights), dtype=torch.bfloat16, quantization=Quantization.STORED)


def test_launch_refuses_stored_quantization_without_block_codes(
    mixed_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder_like = dataclasses.replace(load_checkpoint(mixed_gguf), block_codes=None)
    monkeypatch.setattr(runtime.launch, "load_checkpoint", lambda model: folder_like)
    with pytest.raises(RequestError, match="block codes"):
        runtime.load(mixed_gguf, quantization=Quantization.STORED)
    assert isinstance(runtime.load(mixed_gguf).runner.model.layers[0].attn.qkv, torch.nn.Linear)


# --- the kernel ------------------------------------------------------------------------------------


def _layer(codes: torch.Tensor, block_size: int, with_bases: bool, seed: int = 0) -> BlockCodeLinear:
    """A layer of `codes` with random per-block scales (and bases), given per 16 inputs as checkpoints do."""
    generator = torch.Generator().manual_seed(seed)
    num_rows, num_inputs = codes.shape
    scales = 0.01 * torch.rand(num_rows, num_inputs // block_size, generator=generator) + 1e-3
    bases = 0.1 * torch.randn(num_rows, num_inputs // block_size, generator=generator) * with_bases
    repeat = block_size // 16
    layer = BlockCodeLinear.from_codes(
        codes, scales.repeat_interleave(repeat, 1), bases.repeat_interleave(repeat, 1), None
    )
    assert (layer.block_size, layer.bases is not None) == (block_size, with_bases)
    return layer


def test_code_tiles_round_trip_the_codes() -> None:
    codes = torch.randint(-128, 128, (48, 96), dtype=torch.int8, generator=torch.Generator().manual_seed(0))
    tiles = pack_code_tiles(codes)
    assert tiles.shape == (3, 3, 512) and tiles.dtype == torch.int8
    assert torch.equal(unpack_code_tiles(tiles), codes)


@pytest.mark.parametrize("num_rows", [1, 2, 3, 4, 5, 8, 9, 33])
def test_equals_the_4bit_kernel_on_4bit_codes(num_rows: int) -> None:
    """Same integer sums, same float operations in the same order: bitwise, when the 4-bit layer's bfloat16
    scales and bases hold the block parameters exactly."""
    generator = torch.Generator().manual_seed(num_rows)
    codes = torch.randint(0, 16, (80, 576), dtype=torch.int8, generator=generator)
    scales = (0.01 * torch.rand(80, 18, generator=generator) + 1e-3).to(torch.bfloat16)
    bases = (0.1 * torch.randn(80, 18, generator=generator)).to(torch.bfloat16)
    tiled = [t.view(5, 16, 18).transpose(1, 2).contiguous() for t in (scales, bases)]
    x = torch.randn(num_rows, 576, dtype=torch.bfloat16, generator=generator)
    expected = kernels.int4_linear(x, pack_int4_tiles(codes), *tiled)
    layer = BlockCodeLinear.from_codes(codes, *(t.float().repeat_interleave(2, 1) for t in (scales, bases)), None)
    assert layer.block_size == 32
    assert torch.equal(layer(x), expected)


@pytest.mark.parametrize("num_rows", [1, 3, 8, 13])
@pytest.mark.parametrize(("block_size", "with_bases"), [(32, False), (32, True), (16, False), (16, True)])
def test_equals_the_product_with_quantized_activations(num_rows: int, block_size: int, with_bases: bool) -> None:
    generator = torch.Generator().manual_seed(num_rows)
    codes = torch.randint(-128, 128, (96, 256), dtype=torch.int8, generator=generator)
    layer = _layer(codes, block_size, with_bases, seed=num_rows)
    x = torch.randn(num_rows, 256, dtype=torch.bfloat16, generator=generator)
    x[0, :32] = 0.0  # an all-zero group has step 0
    x[-1, 32:64] *= 50  # an outlier group
    scales, bases = (
        torch.zeros(96, 256, dtype=torch.float64)
        if parameters is None
        else _untiled(parameters).double().repeat_interleave(block_size, 1)
        for parameters in (layer.scales, layer.bases)
    )
    # The code part uses the quantized activations, the base part the exact block sums.
    expected = _quantized_activations(x, 16) @ (codes.double() * scales).T + x.double() @ bases.T
    out = layer(x).double()
    assert (out - expected).abs().max().item() <= 2**-8 * expected.abs().max().item()


@pytest.mark.parametrize(("block_size", "with_bases"), [(32, True), (16, True), (16, False)])
def test_block_linear_is_row_invariant(block_size: int, with_bases: bool) -> None:
    codes = torch.randint(-32, 32, (64, 512), dtype=torch.int8, generator=torch.Generator().manual_seed(1))
    layer = _layer(codes, block_size, with_bases)
    x = torch.randn(21, 512, dtype=torch.bfloat16)
    together = layer(x)
    for row in range(21):
        assert torch.equal(layer(x[row : row + 1]), together[row : row + 1])


def test_the_layer_runs_dense_weights_in_prefill() -> None:
    layer = _layer(torch.randint(-8, 8, (32, 64), dtype=torch.int8), 32, True)
    x = torch.randn(3, 64, dtype=torch.bfloat16)
    layer.uses_dense_weights = True
    assert torch.equal(layer(x), torch.nn.functional.linear(x, _float_weight(layer).to(torch.bfloat16)))


def test_block_linear_refuses_other_block_sizes_and_shapes() -> None:
    layer = _layer(torch.randint(-8, 8, (32, 64), dtype=torch.int8), 32, False)
    x = torch.randn(2, 64, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="block_size must be 16 or 32"):
        kernels.block_linear(x, layer.tiles, layer.scales, None, 64)
    with pytest.raises(RuntimeError, match="scales and bases must be"):
        kernels.block_linear(x, layer.tiles, layer.scales, None, 16)
    with pytest.raises(RuntimeError, match="codes must be"):
        kernels.block_linear(torch.randn(2, 96, dtype=torch.bfloat16), layer.tiles, layer.scales, None, 32)


@pytest.mark.parametrize("activation_bits", [16, 8])
def test_the_4bit_kernel_takes_float32_parameters_as_their_values(activation_bits: int) -> None:
    """float32 scales and bases (a file's, exact) give bitwise what the same values in bfloat16 give."""
    generator = torch.Generator().manual_seed(3)
    codes = torch.randint(0, 16, (48, 128), dtype=torch.int8, generator=generator)
    scales = (0.01 * torch.rand(3, 4, 16, generator=generator)).to(torch.bfloat16)
    bases = (0.1 * torch.randn(3, 4, 16, generator=generator)).to(torch.bfloat16)
    x = torch.randn(9, 128, dtype=torch.bfloat16, generator=generator)
    tiles = pack_int4_tiles(codes)
    expected = kernels.int4_linear(x, tiles, scales, bases, activation_bits)
    assert torch.equal(kernels.int4_linear(x, tiles, scales.float(), bases.float(), activation_bits), expected)
    with pytest.raises(RuntimeError, match="both bfloat16 or both float32"):
        kernels.int4_linear(x, tiles, scales.float(), bases, activation_bits)


def test_codes_of_up_to_32_levels_take_the_nibble_layer() -> None:
    generator = torch.Generator().manual_seed(4)
    scales = (0.01 * torch.rand(16, 4, generator=generator)).half().float().repeat_interleave(2, 1)  # a file's
    no_bases = torch.zeros_like(scales)
    symmetric = torch.randint(-8, 8, (16, 128), dtype=torch.int8, generator=generator)  # Q4_0's
    four_bit = narrow_code_layer(symmetric, scales, no_bases, None)
    assert four_bit is not None and four_bit.fifth_bits is None
    assert torch.equal(_float_weight(four_bit), _float_weight(_layer_of(symmetric, scales)))
    five_bit = narrow_code_layer(symmetric * 2, scales, no_bases, None)  # Q5_0's range, moved up by 16
    assert five_bit is not None and five_bit.fifth_bits is not None
    assert torch.equal(_float_weight(five_bit), _float_weight(_layer_of(symmetric * 2, scales)))
    assert narrow_code_layer(symmetric * 4, scales, no_bases, None) is None  # 6-bit codes (Q6_K's range)
    assert narrow_code_layer(symmetric, scales * (1 + 2**-20), no_bases, None) is None  # moving the codes would round
    assert narrow_code_layer(symmetric, scales, no_bases + 0.5, None) is None  # signed codes with a base
    blocks_of_16 = scales.clone()
    blocks_of_16[:, 1] *= 2
    assert narrow_code_layer(symmetric + 8, blocks_of_16, no_bases, None) is None  # Q6_K-like blocks


def test_fifth_bits_round_trip_the_codes() -> None:
    codes = torch.randint(0, 32, (48, 96), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    fifth_bits = pack_fifth_bits(codes)
    assert fifth_bits.shape == (3, 3, 64) and fifth_bits.dtype == torch.uint8
    assert torch.equal(unpack_fifth_bits(fifth_bits) | unpack_int4_tiles(pack_int4_tiles(codes & 15)), codes)


@pytest.mark.parametrize("num_rows", [1, 2, 3, 4, 5, 8, 9, 33])
def test_5bit_codes_equal_the_int8_code_kernel(num_rows: int) -> None:
    """The nibbles and their fifth bits make the same integer sums as the int8 codes, with the same float
    operations in the same order: bitwise, at every row count (each row block's shape and tile pairing)."""
    generator = torch.Generator().manual_seed(num_rows)
    codes = torch.randint(0, 32, (80, 576), dtype=torch.int8, generator=generator)
    scales, bases = (
        (0.01 * torch.randn(80, 18, generator=generator)).half().float().repeat_interleave(2, 1) for _ in range(2)
    )
    layer = narrow_code_layer(codes, scales, bases, None)
    assert layer is not None and layer.fifth_bits is not None
    x = torch.randn(num_rows, 576, dtype=torch.bfloat16, generator=generator)
    assert torch.equal(layer(x), BlockCodeLinear.from_codes(codes, scales, bases, None)(x))


def test_the_4bit_kernel_refuses_fifth_bits_it_cannot_use() -> None:
    codes = torch.randint(0, 32, (32, 64), dtype=torch.int8, generator=torch.Generator().manual_seed(6))
    scales = torch.full((32, 4), 0.01)
    layer = narrow_code_layer(codes, scales, torch.zeros_like(scales), None)
    assert layer is not None and layer.fifth_bits is not None
    x = torch.randn(2, 64, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="take 16-bit activations, not 8"):
        kernels.int4_linear(x, layer.tiles, layer.scales, layer.bases, 8, layer.fifth_bits)
    with pytest.raises(RuntimeError, match=r"fifth_bits must be contiguous uint8 \[N / 16, K / 32, 64\]"):
        kernels.int4_linear(x, layer.tiles, layer.scales, layer.bases, 16, layer.fifth_bits[:, :, :32].contiguous())


def _layer_of(codes: torch.Tensor, scales: torch.Tensor) -> BlockCodeLinear:
    return BlockCodeLinear.from_codes(codes, scales, torch.zeros_like(scales), None)
