"""GGUF tensors -> Hugging Face weights: dequantize, rename, re-layout.

Three quirks of llama.cpp's files are undone here, so the model sees HF checkpoints only:
- shapes are stored innermost-first (`ne` order): a [out, in] projection reads as [in, out]; the
  reader's numpy arrays are already row-major [out, in], and we check the element count against `ne`;
- for Llama-family models the converter permuted the rows of `q_proj` and `k_proj` so that rotary
  pairs are adjacent (GPT-J style); `unpermute_rows` restores HF's half-split order;
- MoE experts are stacked into one [num_experts, out, in] tensor; HF has one tensor per expert;
- Gemma 3's converter stores its `x * (1 + w)` norm weights as `1 + w`; HF stores `w`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np
import torch
from gguf import GGMLQuantizationType
from gguf.quants import dequantize

from runtime.config import ModelConfig
from runtime.errors import CorruptModelError, UnsupportedModelError
from runtime.loading.gguf_blocks import BLOCK_FORMATS, BlockCodes, block_codes
from runtime.loading.gguf_file import GGUFTensor
from runtime.loading.progress import LoadProgress

__all__ = [
    "SUPPORTED_TENSOR_TYPES",
    "dequantize_tensor",
    "gguf_to_hf_block_codes",
    "gguf_to_hf_weights",
    "stored_matrix_bits",
    "unpermute_rows",
]

_T = GGMLQuantizationType
#: Tensor encodings we load, each checked against a reference in tests/runtime/test_loading.py.
SUPPORTED_TENSOR_TYPES = frozenset(
    {_T.F32, _T.F16, _T.BF16, _T.Q8_0, _T.Q4_0, _T.Q4_1, _T.Q5_0, _T.Q5_1, _T.Q4_K, _T.Q5_K, _T.Q6_K}
)

#: Bits per weight of each supported encoding (block scales aside): what quantizing can keep exactly.
_BITS = {
    _T.F32: 32,
    _T.F16: 16,
    _T.BF16: 16,
    _T.Q8_0: 8,
    _T.Q6_K: 6,
    _T.Q5_0: 5,
    _T.Q5_1: 5,
    _T.Q5_K: 5,
    _T.Q4_0: 4,
    _T.Q4_1: 4,
    _T.Q4_K: 4,
}


def stored_matrix_bits(tensors: list[GGUFTensor]) -> int:
    """The widest encoding of the transformer blocks' matrices (embeddings and norms aside)."""
    return max(
        (_BITS.get(t.tensor_type, 32) for t in tensors if t.name.startswith("blk.") and len(t.shape) == 2), default=32
    )


#: Per-layer GGUF tensor stems -> HF names (after `model.layers.{i}.`), dense and shared parts.
_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
    "ffn_gate_shexp.weight": "mlp.shared_expert.gate_proj.weight",
    "ffn_up_shexp.weight": "mlp.shared_expert.up_proj.weight",
    "ffn_down_shexp.weight": "mlp.shared_expert.down_proj.weight",
    "ffn_gate_inp_shexp.weight": "mlp.shared_expert_gate.weight",
}
#: Where an architecture's GGUF names differ from `_LAYER_NAMES`.
_FAMILY_LAYER_NAMES = {
    "gemma3_text": {
        "post_attention_norm.weight": "post_attention_layernorm.weight",
        "ffn_norm.weight": "pre_feedforward_layernorm.weight",
        "post_ffw_norm.weight": "post_feedforward_layernorm.weight",
    },
    "phi3": {"attn_qkv.weight": "self_attn.qkv_proj.weight", "ffn_up.weight": "mlp.gate_up_proj.weight"},
}
#: Tensors the config reads (`gguf_metadata`), not weights.
_CONFIG_TENSORS = ("rope_freqs.weight",)
_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
#: Expert projections by GGUF role, in each architecture's HF spelling.
_EXPERT_NAMES = {
    "mixtral": {
        "gate": "block_sparse_moe.experts.{e}.w1.weight",
        "down": "block_sparse_moe.experts.{e}.w2.weight",
        "up": "block_sparse_moe.experts.{e}.w3.weight",
    },
    "qwen2_moe": {
        "gate": "mlp.experts.{e}.gate_proj.weight",
        "down": "mlp.experts.{e}.down_proj.weight",
        "up": "mlp.experts.{e}.up_proj.weight",
    },
}
_EXPERT_NAMES["qwen3_moe"] = _EXPERT_NAMES["qwen2_moe"]
_ROUTER_NAMES = {
    "mixtral": "block_sparse_moe.gate.weight",
    "qwen2_moe": "mlp.gate.weight",
    "qwen3_moe": "mlp.gate.weight",
}

_LAYER_TENSOR = re.compile(r"blk\.(\d+)\.(.+)")
_STACKED_EXPERTS = re.compile(r"ffn_(gate|up|down)_exps\.weight")
_SINGLE_EXPERT = re.compile(r"ffn_(gate|up|down)\.(\d+)\.weight")  # older Mixtral files: one tensor per expert

#: llama.cpp permutes Q/K rows for these architectures only (Qwen2's converter does not).
_PERMUTED_ARCHITECTURES = ("llama", "mixtral")


def dequantize_tensor(tensor: GGUFTensor, source: str) -> np.ndarray:
    """The tensor's values as a float32 array in HF's row-major shape (`tensor.shape` reversed).

    Raises:
        UnsupportedModelError: a tensor type outside `SUPPORTED_TENSOR_TYPES` (named).
        CorruptModelError: data that does not hold the element count its shape states.
    """
    if tensor.tensor_type not in SUPPORTED_TENSOR_TYPES:
        raise UnsupportedModelError(f"tensor {tensor.name!r} has unsupported type {tensor.tensor_type.name}", source)
    shape = tuple(int(dim) for dim in reversed(tensor.shape))
    try:
        # A plain ndarray view: slicing the np.memmap subclass costs a Python hook per slice.
        values = dequantize(np.asarray(tensor.data), tensor.tensor_type).reshape(shape)
    except ValueError as exc:
        raise CorruptModelError(f"tensor {tensor.name!r} does not match its shape {shape}: {exc}", source) from exc
    if not values.flags.writeable:  # F32/F16 come back as views of the read-only memory map
        return np.array(values, dtype=np.float32)
    return np.ascontiguousarray(values, dtype=np.float32)


def unpermute_rows(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation, restoring Hugging Face's rotary layout.

    HF's rotary embedding pairs dimension j with j + head_dim/2 inside each head; llama.cpp's converter
    interleaves them (rows viewed as [num_heads, 2, head_dim/2] became [num_heads, head_dim/2, 2]).
    This is the inverse: view as [num_heads, head_dim/2, 2, ...], swap the middle axes back.

    Args:
        weight: a Q or K projection weight [num_heads * head_dim, in], or its bias [num_heads * head_dim].
        num_heads: attention heads for Q, key/value heads for K.

    Returns:
        A new contiguous array of the same shape.
    """
    rows = weight.shape[0]
    interleaved = weight.reshape(num_heads, rows // num_heads // 2, 2, *weight.shape[1:])
    return np.ascontiguousarray(interleaved.swapaxes(1, 2).reshape(weight.shape))


def _hf_names(name: str, values: np.ndarray, config: ModelConfig, source: str) -> Iterator[tuple[str, np.ndarray]]:
    if config.architecture == "gemma3_text" and name.endswith("norm.weight"):
        values = values - np.float32(1.0)
    if name in _GLOBAL_NAMES:
        yield _GLOBAL_NAMES[name], values
        return
    layer_match = _LAYER_TENSOR.fullmatch(name)
    if layer_match is None:
        raise UnsupportedModelError(f"tensor {name!r} is not used by a {config.architecture!r} model", source)
    layer, stem = layer_match.groups()
    prefix = f"model.layers.{layer}."
    if stem.startswith(("attn_q.", "attn_k.")):
        num_heads = config.num_heads if stem.startswith("attn_q.") else config.num_kv_heads
        if values.shape[0] != num_heads * config.head_dim:
            raise CorruptModelError(
                f"tensor {name!r} has {values.shape[0]} rows, not {num_heads} heads x {config.head_dim}", source
            )
        if config.architecture in _PERMUTED_ARCHITECTURES:
            values = unpermute_rows(values, num_heads)
    family_names = _FAMILY_LAYER_NAMES.get(config.architecture, {})
    if stem in family_names:
        yield prefix + family_names[stem], values
    elif stem == "ffn_gate_inp_shexp.weight":
        yield prefix + _LAYER_NAMES[stem], values.reshape(1, -1)  # HF: Linear(hidden, 1)
    elif stem in _LAYER_NAMES and not (config.is_moe and stem.startswith(("ffn_gate.", "ffn_up.", "ffn_down."))):
        yield prefix + _LAYER_NAMES[stem], values
    elif config.is_moe and stem == "ffn_gate_inp.weight":
        yield prefix + _ROUTER_NAMES[config.architecture], values
    elif config.is_moe and (stacked := _STACKED_EXPERTS.fullmatch(stem)):
        expert_name = _EXPERT_NAMES[config.architecture][stacked.group(1)]
        for expert in range(values.shape[0]):  # values: [num_experts, out, in]
            yield prefix + expert_name.format(e=expert), values[expert]
    elif config.is_moe and (single := _SINGLE_EXPERT.fullmatch(stem)):
        yield prefix + _EXPERT_NAMES[config.architecture][single.group(1)].format(e=single.group(2)), values
    else:
        raise UnsupportedModelError(f"tensor {name!r} is not used by a {config.architecture!r} model", source)


def gguf_to_hf_weights(
    tensors: list[GGUFTensor], config: ModelConfig, source: str, progress: LoadProgress
) -> dict[str, torch.Tensor]:
    """Dequantize every tensor to float32 and return them under HF names and layouts.

    Raises:
        UnsupportedModelError: an unsupported tensor type, or a tensor the architecture does not use.
        CorruptModelError: a tensor whose data does not match its shape.
    """
    if config.is_moe and config.architecture not in _EXPERT_NAMES:
        raise UnsupportedModelError(f"mixture-of-experts layers for architecture {config.architecture!r}", source)
    weights: dict[str, torch.Tensor] = {}
    for tensor in tensors:
        if tensor.name in _CONFIG_TENSORS:
            progress.advance()
            continue
        for hf_name, values in _hf_names(tensor.name, dequantize_tensor(tensor, source), config, source):
            weights[hf_name] = torch.from_numpy(np.ascontiguousarray(values))
        progress.advance()
    return weights


def gguf_to_hf_block_codes(tensors: list[GGUFTensor], config: ModelConfig, source: str) -> dict[str, BlockCodes]:
    """The decoder layers' block-format matrices as codes, scales and bases, under HF names and layouts.

    The same renames and row orders as `gguf_to_hf_weights` (each of the three arrays goes through them), so
    `codes * scales + bases` is the weight of the same name there. Embeddings and output heads are left out:
    an output head runs its own approximation (`runtime.model.quantization.RescoredHead`).
    """
    codes: dict[str, BlockCodes] = {}
    for tensor in tensors:
        if tensor.tensor_type not in BLOCK_FORMATS or not tensor.name.startswith("blk."):
            continue
        shape = tuple(int(dim) for dim in reversed(tensor.shape))
        parts = block_codes(tensor.data, tensor.tensor_type, shape, tensor.name)
        renamed = [list(_hf_names(tensor.name, part, config, source)) for part in parts]
        for (hf_name, part_codes), (_, part_scales), (_, part_bases) in zip(*renamed, strict=True):
            codes[hf_name] = BlockCodes(*(np.ascontiguousarray(part) for part in (part_codes, part_scales, part_bases)))
    return codes
