"""Loading a Hugging Face model folder into a `Checkpoint`.

A folder holds `config.json` (hyper-parameters), `*.safetensors` shards (optionally listed in
`model.safetensors.index.json`), `tokenizer.json`, `tokenizer_config.json` (special tokens, chat
template) and optionally `generation_config.json` (the EOS ids generation stops at) and
`chat_template.jinja`. Weights keep their names and stored dtype.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable
from pathlib import Path
from types import MappingProxyType
from typing import Any

import tokenizers
import torch
from safetensors import SafetensorError, safe_open

from runtime.config import SUPPORTED_ARCHITECTURES, ModelConfig
from runtime.errors import CorruptModelError, ModelNotFoundError, UnsupportedModelError
from runtime.loading.checkpoint import IGNORED_WEIGHT_SUFFIXES, Checkpoint, check_weight_names
from runtime.loading.progress import LoadProgress
from runtime.tokenizer import Tokenizer, end_of_generation_ids

__all__ = ["config_from_hf", "load_hf_folder"]

_INDEX_FILE = "model.safetensors.index.json"


def _read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`, None when the file does not exist."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptModelError(f"unreadable {path.name}: {exc}", path) from exc
    if not isinstance(data, dict):
        raise CorruptModelError(f"{path.name} should hold a JSON object", path)
    return data


def _require_json(path: Path) -> dict[str, Any]:
    data = _read_json(path)
    if data is None:
        raise ModelNotFoundError(f"missing {path.name} in the model folder", path)
    return data


def _int_field(config: dict[str, Any], key: str, source: Path, default: int | None = None) -> int:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise CorruptModelError(f"config.json field {key!r} should be an integer, not {value!r}", source)
    return value


def _rope(config: dict[str, Any]) -> tuple[float, dict[str, Any] | None]:
    """(rope_theta, rope_scaling): transformers 5 nests both in `rope_parameters`."""
    parameters = dict(config.get("rope_parameters") or {})
    nested_theta = parameters.pop("rope_theta", 10000.0)  # popped either way: the rest is the scaling
    theta = float(config["rope_theta"] if "rope_theta" in config else nested_theta)
    scaling = config.get("rope_scaling") or (
        parameters if parameters.get("rope_type", "default") != "default" else None
    )
    return theta, scaling


def _check_supported(config: dict[str, Any], source: Path) -> str:
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_ARCHITECTURES:
        raise UnsupportedModelError(
            f"architecture {model_type!r}; supported: {', '.join(SUPPORTED_ARCHITECTURES)}", source
        )
    quantization = config.get("quantization_config")
    if quantization:
        method = quantization.get("quant_method") if isinstance(quantization, dict) else quantization
        raise UnsupportedModelError(f"quantized Hugging Face checkpoints (quant_method {method!r})", source)
    activation = config.get("hidden_activation" if model_type == "gemma3_text" else "hidden_act", "silu")
    if activation != ("gelu_pytorch_tanh" if model_type == "gemma3_text" else "silu"):
        raise UnsupportedModelError(f"activation {activation!r} for a {model_type!r} model", source)
    if model_type not in ("qwen2", "qwen2_moe") and (config.get("attention_bias") or config.get("mlp_bias")):
        raise UnsupportedModelError(f"{model_type} attention_bias / mlp_bias (biases on o_proj or the MLP)", source)
    if model_type in ("qwen2_moe", "qwen3_moe") and (
        config.get("decoder_sparse_step", 1) != 1 or config.get("mlp_only_layers")
    ):
        raise UnsupportedModelError(f"{model_type} with dense layers (decoder_sparse_step / mlp_only_layers)", source)
    if model_type in ("qwen3", "qwen3_moe") and config.get("use_sliding_window"):
        raise UnsupportedModelError(f"{model_type} with sliding-window layers (use_sliding_window)", source)
    if model_type == "gemma3_text" and (
        config.get("attn_logit_softcapping") or config.get("use_bidirectional_attention")
    ):
        raise UnsupportedModelError("Gemma 3 attn_logit_softcapping / use_bidirectional_attention", source)
    partial_rotary = config.get("partial_rotary_factor") or (config.get("rope_parameters") or {}).get(
        "partial_rotary_factor", 1.0
    )
    if partial_rotary != 1.0:
        raise UnsupportedModelError(f"partial rotary embeddings (partial_rotary_factor {partial_rotary})", source)
    return model_type


def _longrope(scaling: dict[str, Any], config: dict[str, Any], source: Path) -> tuple[dict[str, Any], int]:
    """Phi-3's longrope ("su") scaling as the short-factor rotation it is within the original context,
    and that context: (rope_scaling, max_position_embeddings). Past it transformers switches to the
    long factors, which would leave the cached keys rotated by the short ones."""
    original = scaling.get("original_max_position_embeddings", config.get("original_max_position_embeddings"))
    max_positions = _int_field(config, "max_position_embeddings", source)
    if not isinstance(original, int) or "short_factor" not in scaling:
        raise UnsupportedModelError("longrope scaling without short_factor / original_max_position_embeddings", source)
    factor = scaling.get("factor") or max_positions / original
    attention_factor = scaling.get("attention_factor")
    if attention_factor is None:
        attention_factor = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original))
    rope_scaling = {
        "rope_type": "longrope",
        "short_factor": list(scaling["short_factor"]),
        "attention_factor": float(attention_factor),
    }
    return rope_scaling, min(max_positions, original)


def _gemma3_fields(config: dict[str, Any], num_layers: int, source: Path) -> dict[str, Any]:
    """Gemma 3's `ModelConfig` fields: layer kinds, their rope bases, the score scale, softcapping.

    Reads transformers 5's `rope_parameters` per layer kind and `layer_types`, or the older
    `rope_theta` / `rope_local_base_freq` / `rope_scaling` and `sliding_window_pattern`.
    """
    parameters = config.get("rope_parameters") or {}
    global_rope = dict(parameters.get("full_attention") or {})
    local_rope = dict(parameters.get("sliding_attention") or {})
    if local_rope.get("rope_type", "default") != "default":
        raise UnsupportedModelError(f"Gemma 3 local-layer rope scaling {local_rope['rope_type']!r}", source)
    theta = float(global_rope.pop("rope_theta", config.get("rope_theta", 1_000_000.0)))
    scaling = config.get("rope_scaling") or (
        global_rope if global_rope.get("rope_type", "default") != "default" else None
    )
    layer_types = config.get("layer_types")
    if layer_types is None:
        pattern = _int_field(config, "sliding_window_pattern", source, default=6)
        layer_types = ["sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(num_layers)]
    if len(layer_types) != num_layers or not set(layer_types) <= {"sliding_attention", "full_attention"}:
        raise CorruptModelError(f"layer_types {layer_types!r} for {num_layers} layers", source)
    softcap = config.get("final_logit_softcapping")
    return {
        "rope_theta": theta,
        "rope_scaling": scaling,
        "has_qk_norm": True,
        "hidden_act": "gelu_pytorch_tanh",
        "query_pre_attn_scalar": float(config.get("query_pre_attn_scalar", 256)),
        "local_layers": tuple(i for i, kind in enumerate(layer_types) if kind == "sliding_attention"),
        "local_window": _int_field(config, "sliding_window", source, default=4096),
        "local_rope_theta": float(local_rope.get("rope_theta", config.get("rope_local_base_freq", 10_000.0))),
        "final_logit_softcapping": float(softcap) if softcap else None,
    }


def config_from_hf(config: dict[str, Any], source: Path) -> ModelConfig:
    """The `ModelConfig` for a parsed `config.json` (special token ids are filled in later).

    Raises:
        UnsupportedModelError: an architecture or feature Stencil does not implement (named).
        CorruptModelError: required fields missing or of the wrong type.
    """
    model_type = _check_supported(config, source)
    num_heads = _int_field(config, "num_attention_heads", source)
    hidden_size = _int_field(config, "hidden_size", source)
    head_dim = config.get("head_dim")
    rope_theta, rope_scaling = _rope(config)
    max_positions = _int_field(config, "max_position_embeddings", source)
    if rope_scaling and rope_scaling.get("rope_type", rope_scaling.get("type")) in ("longrope", "su"):
        rope_scaling, max_positions = _longrope(rope_scaling, config, source)
    has_sliding_window = model_type in ("mistral", "phi3") or config.get("use_sliding_window", False)
    expert_key = {"mixtral": "num_local_experts", "qwen2_moe": "num_experts", "qwen3_moe": "num_experts"}.get(
        model_type
    )
    if model_type == "qwen3_moe" and "num_experts" not in config:  # transformers 5 writes Mixtral's name
        expert_key = "num_local_experts"
    num_experts = _int_field(config, expert_key, source) if expert_key else 0
    intermediate_size = _int_field(config, "intermediate_size", source)
    num_layers = _int_field(config, "num_hidden_layers", source)
    family: dict[str, Any] = {"rope_theta": rope_theta, "rope_scaling": rope_scaling}
    if model_type in ("qwen3", "qwen3_moe"):
        family["has_qk_norm"] = True
    if model_type == "gemma3_text":
        family = _gemma3_fields(config, num_layers, source)
    return ModelConfig(
        architecture=model_type,
        vocab_size=_int_field(config, "vocab_size", source),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_layers=num_layers,
        num_heads=num_heads,
        num_kv_heads=_int_field(config, "num_key_value_heads", source, default=num_heads),
        max_position_embeddings=max_positions,
        rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
        head_dim_override=head_dim if head_dim and head_dim != hidden_size // num_heads else None,
        tie_word_embeddings=bool(config.get("tie_word_embeddings", model_type == "gemma3_text")),
        attention_bias=model_type in ("qwen2", "qwen2_moe"),
        sliding_window=config.get("sliding_window") if has_sliding_window else None,
        num_experts=num_experts,
        num_experts_per_tok=_int_field(config, "num_experts_per_tok", source) if num_experts else 0,
        # Mixtral's experts are `intermediate_size` wide; Qwen2-MoE states `moe_intermediate_size`.
        moe_intermediate_size=config.get("moe_intermediate_size", intermediate_size) if num_experts else 0,
        shared_expert_intermediate_size=config.get("shared_expert_intermediate_size", 0) if num_experts else 0,
        norm_topk_prob=model_type not in ("qwen2_moe", "qwen3_moe") or bool(config.get("norm_topk_prob", False)),
        **family,
    )


def _shard_paths(folder: Path) -> list[Path]:
    index = _read_json(folder / _INDEX_FILE)
    if index is None:
        shards = sorted(folder.glob("*.safetensors"))
        if not shards:
            raise ModelNotFoundError("no *.safetensors weights in the model folder", folder)
        return shards
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict):
        raise CorruptModelError(f"{_INDEX_FILE} has no weight_map", folder / _INDEX_FILE)
    shards = [folder / name for name in sorted(set(weight_map.values()))]
    missing = [shard.name for shard in shards if not shard.is_file()]
    if missing:
        raise ModelNotFoundError(f"{_INDEX_FILE} lists missing shard(s): {', '.join(missing)}", folder)
    return shards


def _read_weights(shards: Iterable[Path], progress: LoadProgress) -> dict[str, torch.Tensor]:
    weights: dict[str, torch.Tensor] = {}
    for shard in shards:
        try:
            with safe_open(str(shard), framework="pt") as reader:
                names = list(reader.keys())
                progress.add_steps(len(names))
                for name in names:
                    if name in weights:
                        raise CorruptModelError(f"tensor {name!r} appears in more than one shard", shard)
                    if not name.endswith(IGNORED_WEIGHT_SUFFIXES):
                        weights[name] = reader.get_tensor(name)
                    progress.advance()
        except (SafetensorError, OSError) as exc:
            raise CorruptModelError(f"unreadable safetensors shard: {exc}", shard) from exc
    return weights


def _chat_template(folder: Path, tokenizer_config: dict[str, Any]) -> str | None:
    jinja_file = folder / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8")
    template = tokenizer_config.get("chat_template")
    if template is None:
        template = (_read_json(folder / "chat_template.json") or {}).get("chat_template")
    if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}, ...]
        template = next(
            (entry.get("template") for entry in template if isinstance(entry, dict) and entry.get("name") == "default"),
            None,
        )
    if template is not None and not isinstance(template, str):
        raise CorruptModelError("chat_template should be a string or a list of named templates", folder)
    return template


def _token_id(backend: tokenizers.Tokenizer, token: Any) -> int | None:
    text = token.get("content") if isinstance(token, dict) else token
    return backend.token_to_id(text) if isinstance(text, str) else None


def _as_ids(value: Any) -> list[int]:
    return (
        [value]
        if isinstance(value, int)
        else [v for v in value if isinstance(v, int)]
        if isinstance(value, list)
        else []
    )


def load_hf_tokenizer(folder: Path, config: dict[str, Any]) -> Tokenizer:
    """The tokenizer of an HF folder, with its EOS ids and chat template.

    End-of-generation ids: the tokenizer's `eos_token`, then `generation_config.json`'s and
    `config.json`'s `eos_token_id`, then special tokens named in `END_OF_GENERATION_TEXTS`.

    Raises:
        ModelNotFoundError: no `tokenizer.json` (a slow-only `tokenizer.model` is not supported).
        CorruptModelError: an unreadable tokenizer file.
    """
    tokenizer_file = folder / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise ModelNotFoundError("missing tokenizer.json in the model folder", tokenizer_file)
    try:
        backend = tokenizers.Tokenizer.from_file(str(tokenizer_file))
    except Exception as exc:  # tokenizers raises a bare Exception for malformed files
        raise CorruptModelError(f"unreadable tokenizer.json: {exc}", tokenizer_file) from exc
    tokenizer_config = _read_json(folder / "tokenizer_config.json") or {}
    generation_config = _read_json(folder / "generation_config.json") or {}
    declared_eos = [
        _token_id(backend, tokenizer_config.get("eos_token")),
        *_as_ids(generation_config.get("eos_token_id")),
        *_as_ids(config.get("eos_token_id")),
    ]
    bos_id = _token_id(backend, tokenizer_config.get("bos_token"))
    return Tokenizer(
        backend,
        eos_token_ids=end_of_generation_ids(backend, declared_eos),
        bos_token_id=bos_id if bos_id is not None else config.get("bos_token_id"),
        pad_token_id=_token_id(backend, tokenizer_config.get("pad_token")),
        chat_template=_chat_template(folder, tokenizer_config),
        source=str(folder),
    )


def load_hf_folder(folder: Path) -> Checkpoint:
    """Load a Hugging Face model folder: config, safetensors weights, tokenizer.

    Raises:
        ModelNotFoundError: no config.json, no weights, a missing shard or tokenizer.json.
        CorruptModelError: unreadable files, missing tensors.
        UnsupportedModelError: an architecture or feature Stencil does not implement.
    """
    raw_config = _require_json(folder / "config.json")
    config = config_from_hf(raw_config, folder / "config.json")
    tokenizer = load_hf_tokenizer(folder, raw_config)
    progress = LoadProgress(f"Loading {folder.name}")
    try:
        weights = _read_weights(_shard_paths(folder), progress)
    finally:
        progress.close()
    if config.tie_word_embeddings:
        weights.pop("lm_head.weight", None)  # some tied checkpoints store the shared matrix twice
    check_weight_names(weights, config, str(folder))
    config = dataclasses.replace(config, bos_token_id=tokenizer.bos_token_id, eos_token_ids=tokenizer.eos_token_ids)
    stored_bits = max((t.element_size() * 8 for name, t in weights.items() if t.dim() == 2), default=32)
    return Checkpoint(
        config=config,
        weights=MappingProxyType(weights),
        tokenizer=tokenizer,
        source=str(folder),
        stored_bits=stored_bits,
    )
