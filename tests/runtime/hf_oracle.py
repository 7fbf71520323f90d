"""Tiny random-weight transformers models of each supported architecture, as test oracles.

transformers is a test-only dependency: it builds the reference model, whose state_dict (Hugging
Face names) feeds `runtime.model.architectures.build_model`, and whose logits our decoder must reproduce.
"""

from __future__ import annotations

import torch
import transformers

from runtime.config import ModelConfig
from runtime.model.runner import ForwardBatch, ModelRunner

#: The shape of every tiny random checkpoint the runtime tests compare with transformers.
TINY_SIZES = dict(
    vocab_size=97,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
    attn_implementation="eager",
)

#: name -> (config class, extra kwargs); one entry per architecture variant the decoder must match.
TINY_CONFIGS: dict[str, tuple[type, dict]] = {
    "llama": (transformers.LlamaConfig, {}),
    "llama_tied_mqa": (transformers.LlamaConfig, dict(num_key_value_heads=1, tie_word_embeddings=True)),
    "llama3_rope": (
        transformers.LlamaConfig,
        dict(
            rope_parameters=dict(
                rope_type="llama3",
                rope_theta=500000.0,
                factor=8.0,
                low_freq_factor=1.0,
                high_freq_factor=4.0,
                original_max_position_embeddings=32,
            )
        ),
    ),
    "llama_linear_rope": (
        transformers.LlamaConfig,
        dict(rope_parameters=dict(rope_type="linear", rope_theta=10000.0, factor=4.0)),
    ),
    "mistral_window": (transformers.MistralConfig, dict(sliding_window=7)),
    "qwen2": (transformers.Qwen2Config, dict(num_key_value_heads=1)),
    "mixtral": (transformers.MixtralConfig, dict(num_local_experts=4, num_experts_per_tok=2)),
    "qwen2_moe": (
        transformers.Qwen2MoeConfig,
        dict(
            num_experts=4,
            num_experts_per_tok=2,
            moe_intermediate_size=48,
            shared_expert_intermediate_size=80,
            norm_topk_prob=False,
        ),
    ),
}


def tiny_hf_model(name: str, seed: int = 0) -> transformers.PreTrainedModel:
    """A random transformers model of the `TINY_CONFIGS[name]` variant, fp32, eval mode.

    Weights are redrawn at a larger scale than transformers' init (and norms away from 1), so
    attention is sharp and routing decisive: a wrong rotation, mask or expert shows in the logits.
    """
    config_class, extra = TINY_CONFIGS[name]
    return randomized_hf_model(config_class(**{**TINY_SIZES, **extra}), seed)


def randomized_hf_model(config: transformers.PretrainedConfig, seed: int = 0) -> transformers.PreTrainedModel:
    """A transformers model of `config` with the weights `tiny_hf_model` describes, fp32, eval mode."""
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            param.copy_(1.0 + 0.2 * noise if "norm" in param_name else 0.15 * noise)
    return model


def model_config_from_hf(hf_config: transformers.PretrainedConfig) -> ModelConfig:
    """The ModelConfig a loader would produce for `hf_config`."""
    model_type = hf_config.model_type
    rope = dict(hf_config.rope_parameters)
    rope_theta = rope.pop("rope_theta")
    rope_scaling = rope if rope.get("rope_type", "default") != "default" else None
    is_qwen = model_type in ("qwen2", "qwen2_moe")
    return ModelConfig(
        architecture=model_type,
        vocab_size=hf_config.vocab_size,
        hidden_size=hf_config.hidden_size,
        intermediate_size=hf_config.intermediate_size,
        num_layers=hf_config.num_hidden_layers,
        num_heads=hf_config.num_attention_heads,
        num_kv_heads=hf_config.num_key_value_heads,
        max_position_embeddings=hf_config.max_position_embeddings,
        rms_norm_eps=hf_config.rms_norm_eps,
        rope_theta=rope_theta,
        rope_scaling=rope_scaling,
        head_dim_override=getattr(hf_config, "head_dim", None),
        tie_word_embeddings=hf_config.tie_word_embeddings,
        attention_bias=is_qwen or bool(getattr(hf_config, "attention_bias", False)),
        sliding_window=None if is_qwen else getattr(hf_config, "sliding_window", None),
        num_experts=getattr(hf_config, "num_local_experts", getattr(hf_config, "num_experts", 0)) or 0,
        num_experts_per_tok=getattr(hf_config, "num_experts_per_tok", 0) or 0,
        moe_intermediate_size=getattr(hf_config, "moe_intermediate_size", 0) or 0,
        shared_expert_intermediate_size=getattr(hf_config, "shared_expert_intermediate_size", 0) or 0,
        norm_topk_prob=getattr(hf_config, "norm_topk_prob", True),
    )


def hf_logits(model: transformers.PreTrainedModel, token_ids: list[int]) -> torch.Tensor:
    """[len(token_ids), V] float32 logits of a full recompute (no cache): the plain reference decoder."""
    with torch.no_grad():
        return model(torch.tensor([token_ids]), use_cache=False).logits[0].float()


def prefill_all(model: torch.nn.Module, sequences: list[list[int]], block_size: int = 4) -> list[torch.Tensor]:
    """Every position's logits of each sequence, all prefilled in one batched call."""
    runner = ModelRunner(model, num_blocks=32, block_size=block_size)
    tables, next_block = [], 0
    for sequence in sequences:
        num_blocks = -(-len(sequence) // block_size)
        tables.append(list(range(next_block, next_block + num_blocks)))
        next_block += num_blocks
    logits = runner.forward(ForwardBatch(sequences, [0] * len(sequences), tables, all_logits=True))
    return list(logits.split([len(sequence) for sequence in sequences]))
