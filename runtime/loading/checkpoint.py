"""`Checkpoint`: what every loader returns, and the tensor names it must hold.

Whatever the source format, weights use Hugging Face parameter names and layouts
(`model.layers.{i}.self_attn.q_proj.weight` as [out, in], HF's Q/K row order), so the model has one
load path and checkpoint quirks stay in the loaders.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from runtime.config import ModelConfig
from runtime.errors import CorruptModelError, UnsupportedModelError
from runtime.loading.gguf_blocks import BlockCodes
from runtime.tokenizer import Tokenizer

__all__ = ["CastReadable", "Checkpoint", "check_weight_names", "expected_weight_names", "read_as"]

#: Buffers some HF checkpoints carry that the model recomputes; loaders drop them.
IGNORED_WEIGHT_SUFFIXES = (".rotary_emb.inv_freq",)


@dataclass(frozen=True)
class Checkpoint:
    """A loaded model: hyper-parameters, weights by HF name, tokenizer, and where it came from.

    Checkpoints are cached and shared between loads of the same file, so `weights` is a read-only
    mapping: a model's load hook reads (and may copy or cast) tensors, never modifies them in place.

    Attributes:
        config: the model's hyper-parameters.
        weights: HF parameter name -> tensor ([out, in] for projections). GGUF weights are dequantized
            to float32 when read (`gguf_tensors.GGUFWeights`: a large file's on every read, so read each
            once); HF weights keep their stored dtype. `lm_head.weight` is absent when
            `config.tie_word_embeddings`.
        tokenizer: the model's tokenizer.
        source: the resolved path of the file or folder.
        stored_bits: the widest bit width the checkpoint stores its matrix weights in (4 for a Q4_1
            GGUF, 16 for a bfloat16 folder): what a quantized model can keep exactly.
        block_codes: the decoder layers' block-format matrices as their stored codes, under HF names
            (`gguf_tensors.GGUFBlockCodes`, each read from the file when asked for), for `Quantization.STORED`;
            None where the source has no block formats' codes (Hugging Face folders). The file stays
            memory-mapped while the checkpoint lives; no codes stay cached.
    """

    config: ModelConfig
    weights: Mapping[str, torch.Tensor]
    tokenizer: Tokenizer
    source: str
    stored_bits: int = 32
    block_codes: Callable[[], Mapping[str, BlockCodes]] | None = None


def _layer_weight_names(config: ModelConfig, layer: int) -> list[str]:
    prefix = f"model.layers.{layer}."
    names = [prefix + "input_layernorm.weight", prefix + "post_attention_layernorm.weight"]
    if config.architecture == "gemma3_text":
        names += [prefix + "pre_feedforward_layernorm.weight", prefix + "post_feedforward_layernorm.weight"]
    if config.has_qk_norm:
        names += [prefix + "self_attn.q_norm.weight", prefix + "self_attn.k_norm.weight"]
    if config.architecture == "phi3":  # q/k/v and gate/up stored fused
        names += [prefix + "self_attn.qkv_proj.weight", prefix + "self_attn.o_proj.weight"]
        return names + [prefix + "mlp.gate_up_proj.weight", prefix + "mlp.down_proj.weight"]
    names += [f"{prefix}self_attn.{proj}_proj.weight" for proj in ("q", "k", "v", "o")]
    if config.attention_bias:
        names += [f"{prefix}self_attn.{proj}_proj.bias" for proj in ("q", "k", "v")]
    if not config.is_moe:
        return names + [f"{prefix}mlp.{proj}_proj.weight" for proj in ("gate", "up", "down")]
    if config.architecture == "mixtral":
        moe = prefix + "block_sparse_moe."
        names.append(moe + "gate.weight")
        return names + [f"{moe}experts.{e}.{w}.weight" for e in range(config.num_experts) for w in ("w1", "w2", "w3")]
    mlp = prefix + "mlp."
    names.append(mlp + "gate.weight")
    names += [f"{mlp}experts.{e}.{p}_proj.weight" for e in range(config.num_experts) for p in ("gate", "up", "down")]
    if config.shared_expert_intermediate_size:
        names += [f"{mlp}shared_expert.{p}_proj.weight" for p in ("gate", "up", "down")]
        names.append(mlp + "shared_expert_gate.weight")
    return names


def expected_weight_names(config: ModelConfig) -> set[str]:
    """Every tensor name a checkpoint of `config`'s shape must hold, no more.

    Raises:
        UnsupportedModelError: an MoE architecture other than Mixtral, Qwen2-MoE and Qwen3-MoE.
    """
    if config.is_moe and config.architecture not in ("mixtral", "qwen2_moe", "qwen3_moe"):
        raise UnsupportedModelError(f"mixture-of-experts layers for architecture {config.architecture!r}")
    names = {"model.embed_tokens.weight", "model.norm.weight"}
    if not config.tie_word_embeddings:
        names.add("lm_head.weight")
    for layer in range(config.num_layers):
        names.update(_layer_weight_names(config, layer))
    return names


def _listing(names: set[str], max_names: int = 5) -> str:
    shown = sorted(names)[:max_names]
    more = len(names) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more else "")


def check_weight_names(weights: Mapping[str, torch.Tensor], config: ModelConfig, source: str) -> None:
    """Fail loudly when a checkpoint lacks tensors its config needs, or holds tensors the model would
    ignore (ignoring a weight silently gives wrong outputs).

    Raises:
        CorruptModelError: missing tensors (named).
        UnsupportedModelError: tensors the architecture does not use (named).
    """
    expected = expected_weight_names(config)
    missing = expected - weights.keys()
    if missing:
        raise CorruptModelError(f"missing {len(missing)} tensor(s): {_listing(missing)}", source)
    unexpected = weights.keys() - expected
    if unexpected:
        raise UnsupportedModelError(
            f"{len(unexpected)} tensor(s) not used by a {config.architecture!r} model: {_listing(unexpected)}", source
        )


@runtime_checkable
class CastReadable(Protocol):
    """Weights that cast a tensor as they read it (a GGUF file's: `GGUFWeights.read_as`, a chunk of rows at a
    time, so no float32 copy of a large tensor exists whole)."""

    def read_as(self, name: str, dtype: torch.dtype) -> torch.Tensor: ...


def read_as(weights: Mapping[str, torch.Tensor], name: str, dtype: torch.dtype) -> torch.Tensor:
    """`weights[name]` cast to `dtype`, by the weights' own `read_as` where they have one."""
    return weights.read_as(name, dtype) if isinstance(weights, CastReadable) else weights[name].to(dtype)
