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
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
from gguf import GGMLQuantizationType
from gguf.quants import dequantize

from runtime.config import ModelConfig
from runtime.errors import CorruptModelError, UnsupportedModelError
from runtime.loading.gguf_blocks import BLOCK_FORMATS, BlockCodes, block_codes
from runtime.loading.gguf_file import GGUFTensor

__all__ = [
    "SUPPORTED_TENSOR_TYPES",
    "GGUFBlockCodes",
    "GGUFWeights",
    "dequantize_tensor",
    "float32_bytes",
    "stored_matrix_bits",
    "unpermute_rows",
]

_T = GGMLQuantizationType
V = TypeVar("V")
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


#: Values `dequantize_tensor` dequantizes at a time: `gguf`'s work arrays for a 262k-token embedding would take
#: several times its float32 size.
_DEQUANTIZED_VALUES_PER_CHUNK = 1 << 22


def dequantize_tensor(tensor: GGUFTensor, source: str) -> np.ndarray:
    """The tensor's values as a float32 array in HF's row-major shape (`tensor.shape` reversed).

    Raises:
        UnsupportedModelError: a tensor type outside `SUPPORTED_TENSOR_TYPES` (named).
        CorruptModelError: data that does not hold the element count its shape states.
    """
    shape = _hf_shape(tensor)
    out = np.empty((int(np.prod(shape[:-1], dtype=np.int64)), shape[-1]), dtype=np.float32)
    for start, values in _dequantized_rows(tensor, source):
        out[start : start + len(values)] = values
    return out.reshape(shape)


def _dequantized_rows(tensor: GGUFTensor, source: str) -> Iterator[tuple[int, np.ndarray]]:
    """The tensor's rows (its HF shape flattened to [rows, inputs]) dequantized to float32 a chunk at a time,
    each with its first row: `gguf`'s work arrays stay a chunk's size (a 262k-token embedding's whole would
    take several times its float32 size)."""
    _check_supported(tensor, source)
    shape = _hf_shape(tensor)
    # A plain ndarray view: slicing the np.memmap subclass costs a Python hook per slice.
    data = np.asarray(tensor.data)
    rows = data.reshape(-1, data.shape[-1]) if data.ndim > 1 else data[None]
    step = max(1, _DEQUANTIZED_VALUES_PER_CHUNK // shape[-1])
    for start in range(0, rows.shape[0], step):
        try:
            values = dequantize(rows[start : start + step], tensor.tensor_type).reshape(-1, shape[-1])
        except ValueError as exc:
            raise CorruptModelError(f"tensor {tensor.name!r} does not match its shape {shape}: {exc}", source) from exc
        yield start, values if values.flags.writeable else values.copy()  # F32 rows: views of the read-only map


def _check_supported(tensor: GGUFTensor, source: str) -> None:
    if tensor.tensor_type not in SUPPORTED_TENSOR_TYPES:
        raise UnsupportedModelError(f"tensor {tensor.name!r} has unsupported type {tensor.tensor_type.name}", source)


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


@dataclass(frozen=True)
class _Target:
    """Where a GGUF tensor's values go: a Hugging Face name, and the re-layout on the way."""

    hf_name: str
    expert: int | None = None  # the slice of a stacked [num_experts, out, in] tensor
    unpermute_heads: int = 0  # heads whose Q/K rows llama.cpp permuted (`unpermute_rows`)
    norm_offset: bool = False  # Gemma 3's norm stored as 1 + w
    as_row: bool = False  # HF's Linear(hidden, 1)

    def apply(self, values: np.ndarray) -> np.ndarray:
        if self.expert is not None:
            values = values[self.expert]
        if self.norm_offset:
            values = values - np.float32(1.0)
        if self.unpermute_heads:
            values = unpermute_rows(values, self.unpermute_heads)
        return values.reshape(1, -1) if self.as_row else values


def _hf_targets(name: str, shape: tuple[int, ...], config: ModelConfig, source: str) -> list[_Target]:
    """The Hugging Face names (and re-layouts) of GGUF tensor `name` of HF row-major `shape`.

    Raises:
        UnsupportedModelError: a tensor the architecture does not use.
        CorruptModelError: Q/K rows that are not heads x head size.
    """
    norm_offset = config.architecture == "gemma3_text" and name.endswith("norm.weight")
    if name in _GLOBAL_NAMES:
        return [_Target(_GLOBAL_NAMES[name], norm_offset=norm_offset)]
    layer_match = _LAYER_TENSOR.fullmatch(name)
    if layer_match is None:
        raise UnsupportedModelError(f"tensor {name!r} is not used by a {config.architecture!r} model", source)
    layer, stem = layer_match.groups()
    prefix = f"model.layers.{layer}."
    unpermute_heads = 0
    if stem.startswith(("attn_q.", "attn_k.")):
        num_heads = config.num_heads if stem.startswith("attn_q.") else config.num_kv_heads
        if shape[0] != num_heads * config.head_dim:
            raise CorruptModelError(
                f"tensor {name!r} has {shape[0]} rows, not {num_heads} heads x {config.head_dim}", source
            )
        if config.architecture in _PERMUTED_ARCHITECTURES:
            unpermute_heads = num_heads
    family_names = _FAMILY_LAYER_NAMES.get(config.architecture, {})
    if stem in family_names:
        return [_Target(prefix + family_names[stem], norm_offset=norm_offset)]
    if stem == "ffn_gate_inp_shexp.weight":
        return [_Target(prefix + _LAYER_NAMES[stem], as_row=True)]
    if stem in _LAYER_NAMES and not (config.is_moe and stem.startswith(("ffn_gate.", "ffn_up.", "ffn_down."))):
        return [_Target(prefix + _LAYER_NAMES[stem], unpermute_heads=unpermute_heads, norm_offset=norm_offset)]
    if config.is_moe and stem == "ffn_gate_inp.weight":
        return [_Target(prefix + _ROUTER_NAMES[config.architecture])]
    if config.is_moe and (stacked := _STACKED_EXPERTS.fullmatch(stem)):
        expert_name = _EXPERT_NAMES[config.architecture][stacked.group(1)]
        return [_Target(prefix + expert_name.format(e=expert), expert=expert) for expert in range(shape[0])]
    if config.is_moe and (single := _SINGLE_EXPERT.fullmatch(stem)):
        return [_Target(prefix + _EXPERT_NAMES[config.architecture][single.group(1)].format(e=single.group(2)))]
    raise UnsupportedModelError(f"tensor {name!r} is not used by a {config.architecture!r} model", source)


def _hf_shape(tensor: GGUFTensor) -> tuple[int, ...]:
    return tuple(int(dim) for dim in reversed(tensor.shape))


class _FileTensors(Mapping[str, V]):
    """Tensors of a GGUF file under Hugging Face names and layouts, read from the memory map when asked for.

    Nothing is read at construction, and what is read stays only with `keep`. A stacked-experts tensor is read
    once for all its experts' names (held from its first expert's read to its last's). Reads may come from
    several threads.
    """

    def __init__(self, tensors: list[GGUFTensor], config: ModelConfig, source: str, *, keep: bool) -> None:
        self._source = source
        self._targets: dict[str, tuple[GGUFTensor, _Target]] = {}
        for tensor in tensors:
            for target in _hf_targets(tensor.name, _hf_shape(tensor), config, source):
                self._targets[target.hf_name] = (tensor, target)
        self._kept: dict[str, V] | None = {} if keep else None
        self._last: tuple[str, tuple[np.ndarray, ...]] | None = None
        self._lock = threading.Lock()

    def _read(self, tensor: GGUFTensor) -> tuple[np.ndarray, ...]:
        """The tensor's arrays in HF row-major shape, before renames and re-layouts."""
        raise NotImplementedError

    def _value(self, arrays: tuple[np.ndarray, ...]) -> V:
        raise NotImplementedError

    def __getitem__(self, name: str) -> V:
        tensor, target = self._targets[name]
        with self._lock:
            if self._kept is not None and name in self._kept:
                return self._kept[name]
            if self._last is None or self._last[0] != tensor.name:
                self._last = (tensor.name, self._read(tensor))
            arrays = self._last[1]
            value = self._value(tuple(np.ascontiguousarray(target.apply(array)) for array in arrays))
            if target.expert is None or target.expert == len(arrays[0]) - 1:
                self._last = None  # held only while a stack's experts are read, never after the load
            if self._kept is not None:
                self._kept[name] = value
            return value

    def __contains__(self, name: object) -> bool:  # Mapping's would read the tensor
        return name in self._targets

    def __iter__(self) -> Iterator[str]:
        return iter(self._targets)

    def __len__(self) -> int:
        return len(self._targets)


class GGUFWeights(_FileTensors[torch.Tensor]):
    """A GGUF file's weights under Hugging Face names and layouts, dequantized to float32 when read.

    A small model that loads often keeps what it read (`keep`: the default model's 540 MB, read again by each
    `runtime.load`); a large model's float32 copy (4 bytes a weight: 32 GB for an 8B model) never exists
    whole: `build_model` casts each tensor as it reads it.

    Raises:
        UnsupportedModelError: an unsupported tensor type, or a tensor the architecture does not use.
        CorruptModelError: Q/K rows that are not heads x head size (data that does not match its shape: when
            read).
    """

    def __init__(self, tensors: list[GGUFTensor], config: ModelConfig, source: str, *, keep: bool) -> None:
        if config.is_moe and config.architecture not in _EXPERT_NAMES:
            raise UnsupportedModelError(f"mixture-of-experts layers for architecture {config.architecture!r}", source)
        for tensor in tensors:
            _check_supported(tensor, source)
        super().__init__([t for t in tensors if t.name not in _CONFIG_TENSORS], config, source, keep=keep)

    def _read(self, tensor: GGUFTensor) -> tuple[np.ndarray, ...]:
        return (dequantize_tensor(tensor, self._source),)

    def _value(self, arrays: tuple[np.ndarray, ...]) -> torch.Tensor:
        return torch.from_numpy(arrays[0])

    def read_as(self, name: str, dtype: torch.dtype) -> torch.Tensor:
        """`self[name]` cast to `dtype`; a tensor taken as stored (no re-layout), read a chunk of rows at a
        time, so its whole float32 copy never exists (an 8B model's embedding: 2 GB)."""
        tensor, target = self._targets[name]
        if self._kept is not None or target != _Target(target.hf_name) or len(tensor.shape) != 2:
            return self[name].to(dtype)
        out = torch.empty(_hf_shape(tensor), dtype=dtype)
        for start, values in _dequantized_rows(tensor, self._source):
            out[start : start + len(values)] = torch.from_numpy(values)
        return out

    @property
    def resident_bytes(self) -> int:
        """Bytes of the float32 tensors kept."""
        return sum(t.numel() * t.element_size() for t in (self._kept or {}).values())


class GGUFBlockCodes(_FileTensors[BlockCodes]):
    """The decoder layers' block-format matrices as codes, scales and bases, under Hugging Face names and
    layouts, read from the file when asked for (nothing kept: a model takes each once).

    The same renames and row orders as `GGUFWeights` (each of the three arrays goes through them), so
    `codes * scales + bases` is the weight of the same name there. Embeddings and output heads are left out:
    an output head runs its own approximation (`runtime.model.quantization.RescoredHead`).
    """

    def __init__(self, tensors: list[GGUFTensor], config: ModelConfig, source: str) -> None:
        blocks = [t for t in tensors if t.tensor_type in BLOCK_FORMATS and t.name.startswith("blk.")]
        super().__init__(blocks, config, source, keep=False)

    def _read(self, tensor: GGUFTensor) -> tuple[np.ndarray, ...]:
        return tuple(block_codes(tensor.data, tensor.tensor_type, _hf_shape(tensor), tensor.name))

    def _value(self, arrays: tuple[np.ndarray, ...]) -> BlockCodes:
        return BlockCodes(*arrays)


def float32_bytes(tensors: list[GGUFTensor]) -> int:
    """Bytes of the tensors dequantized to float32."""
    return sum(4 * int(np.prod(tensor.shape)) for tensor in tensors)
