"""Reading a GGUF file's header: typed access to its metadata, and the `ModelConfig` it describes.

GGUF (llama.cpp's format) keeps hyper-parameters under `{arch}.*` keys (`llama.block_count`, ...) and
the tokenizer under `tokenizer.*` (`runtime.loading.gguf_file` parses the container).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, overload

import numpy as np

from runtime.config import ModelConfig
from runtime.errors import CorruptModelError, UnsupportedModelError
from runtime.loading.gguf_file import GGUFFile, GGUFTensor

__all__ = ["GGUF_ARCHITECTURES", "GGUFMetadata", "config_from_gguf"]

#: `general.architecture` -> Hugging Face `model_type`. A "llama" file with experts is Mixtral.
GGUF_ARCHITECTURES = {
    "llama": "llama",
    "qwen2": "qwen2",
    "qwen2moe": "qwen2_moe",
    "qwen3": "qwen3",
    "qwen3moe": "qwen3_moe",
    "gemma3": "gemma3_text",
    "phi3": "phi3",
}
#: llama.cpp's fixed Gemma 3 settings its files do not state: every 6th layer global, local rope base.
_GEMMA3_SLIDING_WINDOW_PATTERN = 6
_GEMMA3_LOCAL_ROPE_THETA = 10000.0
#: llama.cpp scales Gemma 3 27B's (62 layers) scores by hidden / heads, every other size by head_dim.
_GEMMA3_27B_NUM_LAYERS = 62


class GGUFMetadata:
    """Typed access to a GGUF file's key/value metadata.

    Args:
        gguf_file: the parsed file.
        source: its path, for error messages.
    """

    def __init__(self, gguf_file: GGUFFile, source: str) -> None:
        self._fields = gguf_file.fields
        self.source = source

    def __contains__(self, key: str) -> bool:
        return key in self._fields

    def get(self, key: str, default: Any = None) -> Any:
        """The value of `key` as Python data (str, int, float, bool, or a list of those), or `default`."""
        return self._fields.get(key, default)

    @overload
    def get_int(self, key: str) -> int | None: ...

    @overload
    def get_int(self, key: str, default: int) -> int: ...

    def get_int(self, key: str, default: int | None = None) -> int | None:
        """An integer value, `default` when absent.

        Raises:
            CorruptModelError: present but not an integer.
        """
        value = self.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise CorruptModelError(f"metadata {key!r} should be an integer, not {value!r}", self.source)
        return value

    @overload
    def get_float(self, key: str) -> float | None: ...

    @overload
    def get_float(self, key: str, default: float) -> float: ...

    def get_float(self, key: str, default: float | None = None) -> float | None:
        """A number as float, `default` when absent.

        Raises:
            CorruptModelError: present but not a number.
        """
        value = self.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CorruptModelError(f"metadata {key!r} should be a number, not {value!r}", self.source)
        return float(value)

    def require_int(self, key: str) -> int:
        """An integer value that must be present.

        Raises:
            CorruptModelError: absent, or not an integer.
        """
        value = self.get_int(key)
        if value is None:
            raise CorruptModelError(f"missing metadata key {key!r}", self.source)
        return value

    def require_str(self, key: str) -> str:
        """A string value that must be present.

        Raises:
            CorruptModelError: absent, or not a string.
        """
        value = self.get(key)
        if not isinstance(value, str):
            raise CorruptModelError(f"metadata {key!r} should be a string, not {value!r}", self.source)
        return value


def _rope_scaling(metadata: GGUFMetadata, prefix: str) -> dict[str, Any] | None:
    scaling_type = metadata.get(prefix + "rope.scaling.type", "none")
    if scaling_type == "none":
        return None
    factor = metadata.get_float(prefix + "rope.scaling.factor")
    if scaling_type not in ("linear", "yarn") or factor is None:
        raise UnsupportedModelError(f"rope scaling {scaling_type!r} (factor {factor})", metadata.source)
    scaling: dict[str, Any] = {"rope_type": scaling_type, "factor": factor}
    original_context = metadata.get_int(prefix + "rope.scaling.original_context_length")
    if original_context is not None:
        scaling["original_max_position_embeddings"] = original_context
    return scaling


def _tensor_values(tensors: Sequence[GGUFTensor], name: str, source: str) -> list[float]:
    tensor = next(tensor for tensor in tensors if tensor.name == name)
    if tensor.data.dtype != np.float32:
        raise UnsupportedModelError(f"tensor {name!r} stored as {tensor.tensor_type.name}, not F32", source)
    return [float(value) for value in np.asarray(tensor.data).reshape(-1)]


def _family_fields(
    metadata: GGUFMetadata, prefix: str, architecture: str, tensors: Sequence[GGUFTensor], head_dim: int
) -> dict[str, Any]:
    """What sets Qwen3, Gemma 3 and Llama 3.1-style files apart from the Llama family's defaults."""
    tensor_names = {tensor.name for tensor in tensors}
    fields: dict[str, Any] = {"has_qk_norm": "blk.0.attn_q_norm.weight" in tensor_names}
    if "rope_freqs.weight" in tensor_names:  # Llama 3.1: theta_i / factor_i, one factor per rotated pair
        fields["rope_scaling"] = {
            "rope_type": "frequency_factors",
            "factors": _tensor_values(tensors, "rope_freqs.weight", metadata.source),
        }
    if "rope_factors_long.weight" in tensor_names:
        raise UnsupportedModelError("Phi-3 longrope frequency factors in a GGUF (rope_factors_long)", metadata.source)
    if architecture == "phi3":
        fields["sliding_window"] = metadata.get_int(prefix + "attention.sliding_window")
    if architecture != "gemma3_text":
        return fields
    num_layers = metadata.require_int(prefix + "block_count")
    pattern = metadata.get_int(prefix + "attention.sliding_window_pattern", _GEMMA3_SLIDING_WINDOW_PATTERN)
    scalar = head_dim
    if num_layers == _GEMMA3_27B_NUM_LAYERS:
        scalar = metadata.require_int(prefix + "embedding_length") // metadata.require_int(
            prefix + "attention.head_count"
        )
    return fields | {
        "hidden_act": "gelu_pytorch_tanh",
        "query_pre_attn_scalar": float(scalar),
        "local_layers": tuple(i for i in range(num_layers) if (i + 1) % pattern),
        "local_window": metadata.require_int(prefix + "attention.sliding_window"),
        "local_rope_theta": _GEMMA3_LOCAL_ROPE_THETA,
        "final_logit_softcapping": metadata.get_float(prefix + "final_logit_softcapping"),
    }


def config_from_gguf(metadata: GGUFMetadata, tensors: Sequence[GGUFTensor]) -> ModelConfig:
    """The `ModelConfig` a GGUF file describes (the tokenizer's special ids are filled in later).

    Raises:
        UnsupportedModelError: an architecture, rope scaling or head layout Stencil does not implement.
        CorruptModelError: required keys missing or of the wrong type.
    """
    gguf_architecture = metadata.require_str("general.architecture")
    if gguf_architecture not in GGUF_ARCHITECTURES:
        raise UnsupportedModelError(
            f"architecture {gguf_architecture!r}; supported: {', '.join(sorted(GGUF_ARCHITECTURES))}", metadata.source
        )
    prefix = gguf_architecture + "."
    tensor_names = {tensor.name for tensor in tensors}
    num_experts = metadata.get_int(prefix + "expert_count", 0)
    architecture = "mixtral" if gguf_architecture == "llama" and num_experts else GGUF_ARCHITECTURES[gguf_architecture]
    hidden_size = metadata.require_int(prefix + "embedding_length")
    num_heads = metadata.require_int(prefix + "attention.head_count")
    head_dim = metadata.get_int(prefix + "attention.key_length", hidden_size // num_heads)
    rope_dim = metadata.get_int(prefix + "rope.dimension_count", head_dim)
    if rope_dim != head_dim:
        raise UnsupportedModelError(
            f"partial rotary embeddings (rope on {rope_dim} of {head_dim} head dims)", metadata.source
        )
    feed_forward = metadata.require_int(prefix + "feed_forward_length")
    embedding = next((tensor for tensor in tensors if tensor.name == "token_embd.weight"), None)
    if embedding is None:
        raise CorruptModelError("missing tensor 'token_embd.weight'", metadata.source)
    vocab_size = int(embedding.shape[-1])  # GGUF shapes are innermost-first: [hidden, vocab]
    declared_vocab_size = metadata.get_int(prefix + "vocab_size", vocab_size)
    if declared_vocab_size != vocab_size:
        raise CorruptModelError(
            f"{prefix}vocab_size is {declared_vocab_size} but the embedding has {vocab_size} rows", metadata.source
        )
    family = _family_fields(metadata, prefix, architecture, tensors, head_dim)
    if "rope_scaling" not in family:
        family["rope_scaling"] = _rope_scaling(metadata, prefix)
    return ModelConfig(
        architecture=architecture,
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=feed_forward,
        num_layers=metadata.require_int(prefix + "block_count"),
        num_heads=num_heads,
        num_kv_heads=metadata.get_int(prefix + "attention.head_count_kv", num_heads),
        max_position_embeddings=metadata.require_int(prefix + "context_length"),
        rms_norm_eps=metadata.get_float(prefix + "attention.layer_norm_rms_epsilon", 1e-5),
        rope_theta=metadata.get_float(prefix + "rope.freq_base", 10000.0),
        head_dim_override=head_dim if head_dim != hidden_size // num_heads else None,
        tie_word_embeddings="output.weight" not in tensor_names,
        attention_bias="blk.0.attn_q.bias" in tensor_names,
        num_experts=num_experts,
        num_experts_per_tok=metadata.get_int(prefix + "expert_used_count", 0),
        moe_intermediate_size=metadata.get_int(prefix + "expert_feed_forward_length", feed_forward)
        if num_experts
        else 0,
        shared_expert_intermediate_size=metadata.get_int(prefix + "expert_shared_feed_forward_length", 0),
        # Mixtral and Qwen3-MoE always renormalize their top-k; a Qwen2-MoE file says so (llama.cpp's default: no).
        norm_topk_prob=architecture != "qwen2_moe" or bool(metadata.get(prefix + "expert_weights_norm", False)),
        **family,
    )
