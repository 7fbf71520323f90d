"""Hugging Face parameter names to the decoder's fused layout: the model's load hook.

Loaders hand the model Hugging Face names (`model.layers.0.self_attn.q_proj.weight`, ...) whatever
the file format. This rewrite renames them and fuses what the decoder runs as one matmul: q/k/v into
`attn.qkv` (rows q, k, v), gate/up into `ffn.gate_up` (gate rows first), and per-expert matrices
into stacked `[E, ...]` tensors. It accepts both expert layouts in circulation: per-expert tensors
as checkpoints on the Hub store them (Mixtral `block_sparse_moe.experts.N.w1/w2/w3`, Qwen2-MoE
`mlp.experts.N.gate_proj/up_proj/down_proj`) and the pre-stacked `mlp.experts.gate_up_proj` /
`down_proj` of transformers 5. Phi-3 stores q/k/v and gate/up already fused (`qkv_proj`,
`gate_up_proj`). Gemma 3 names its four norms differently (`post_attention_layernorm` follows
attention there, `pre_feedforward_layernorm` precedes the feed-forward) and multiplies by `1 + w`:
its norm weights get the 1 added here. Tied embeddings reuse the embedding table as the output
projection. Names it does not know are left in place, so the strict load reports them.
"""

from __future__ import annotations

import re

import torch

from runtime.config import ModelConfig

_LAYER = "model.layers.{i}."
_MOE_PREFIXES = ("mlp.", "block_sparse_moe.")

#: One Hugging Face tensor each: (Hugging Face name after the layer prefix, our name after "layers.{i}.").
_LAYER_RENAMES = (
    ("input_layernorm.weight", "attn_norm.weight"),
    ("post_attention_layernorm.weight", "ffn_norm.weight"),
    ("self_attn.o_proj.weight", "attn.o_proj.weight"),
    ("self_attn.q_norm.weight", "attn.q_norm.weight"),
    ("self_attn.k_norm.weight", "attn.k_norm.weight"),
    ("self_attn.qkv_proj.weight", "attn.qkv.weight"),
    ("mlp.gate_up_proj.weight", "ffn.gate_up.weight"),
    ("mlp.down_proj.weight", "ffn.down.weight"),
    ("mlp.gate.weight", "ffn.router"),
    ("block_sparse_moe.gate.weight", "ffn.router"),
    ("mlp.experts.gate_up_proj", "ffn.experts_gate_up"),
    ("mlp.experts.down_proj", "ffn.experts_down"),
    ("mlp.shared_expert.down_proj.weight", "ffn.shared_expert.down.weight"),
    ("mlp.shared_expert_gate.weight", "ffn.shared_expert_gate"),
)

#: Several Hugging Face tensors concatenated along rows: (their names, our name).
_LAYER_FUSIONS = (
    (("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"), "attn.qkv.weight"),
    (("self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"), "attn.qkv.bias"),
    (("mlp.gate_proj.weight", "mlp.up_proj.weight"), "ffn.gate_up.weight"),
    (("mlp.shared_expert.gate_proj.weight", "mlp.shared_expert.up_proj.weight"), "ffn.shared_expert.gate_up.weight"),
)

#: Per-expert names (after "<moe prefix>experts.{e}."): (gate, up, down), Mixtral's then Qwen2-MoE's.
_EXPERT_NAMES = (("w1.weight", "w3.weight", "w2.weight"), ("gate_proj.weight", "up_proj.weight", "down_proj.weight"))

#: Gemma 3's layer norms, renamed before the common renames: (Hugging Face name, our name).
_GEMMA3_NORM_RENAMES = (
    ("input_layernorm.weight", "attn_norm.weight"),
    ("post_attention_layernorm.weight", "post_attn_norm.weight"),
    ("pre_feedforward_layernorm.weight", "ffn_norm.weight"),
    ("post_feedforward_layernorm.weight", "post_ffn_norm.weight"),
    ("self_attn.q_norm.weight", "attn.q_norm.weight"),
    ("self_attn.k_norm.weight", "attn.k_norm.weight"),
)

#: Tensors a checkpoint may carry that the model derives itself.
_DERIVED = re.compile(r".*rotary_emb\.inv_freq$")


def rewrite_hf_state_dict(state_dict: dict[str, torch.Tensor], config: ModelConfig, *, prefix: str = "") -> None:
    """Rename and fuse Hugging Face tensors in `state_dict`, in place.

    Args:
        state_dict: tensors under Hugging Face names (as `torch.nn.Module.load_state_dict` passes them).
        config: the model; reads `num_layers`, `num_experts` and `tie_word_embeddings`.
        prefix: the module prefix `load_state_dict` gives its hooks ("" for a top-level model).
    """
    for name in [name for name in state_dict if _DERIVED.match(name)]:
        del state_dict[name]
    _move(state_dict, prefix + "model.embed_tokens.weight", prefix + "embed.weight")
    _move(state_dict, prefix + "model.norm.weight", prefix + "norm.weight")
    if config.architecture == "gemma3_text":
        _rewrite_gemma3_norms(state_dict, config, prefix)
    if config.tie_word_embeddings and prefix + "embed.weight" in state_dict:
        state_dict[prefix + "lm_head.weight"] = state_dict[prefix + "embed.weight"]
    for i in range(config.num_layers):
        source = prefix + _LAYER.format(i=i)
        target = f"{prefix}layers.{i}."
        for hf_name, name in _LAYER_RENAMES:
            _move(state_dict, source + hf_name, target + name)
        for hf_names, name in _LAYER_FUSIONS:
            _fuse(state_dict, [source + hf_name for hf_name in hf_names], target + name)
        if config.num_experts:
            _stack_experts(state_dict, source, target, config.num_experts)


def _rewrite_gemma3_norms(state_dict: dict[str, torch.Tensor], config: ModelConfig, prefix: str) -> None:
    """Gemma 3's norms under our names, with the `1 +` of its `x * (1 + w)` folded into the weight."""
    names = [prefix + "norm.weight"]
    for i in range(config.num_layers):
        for hf_name, name in _GEMMA3_NORM_RENAMES:
            _move(state_dict, f"{prefix}model.layers.{i}.{hf_name}", f"{prefix}layers.{i}.{name}")
            names.append(f"{prefix}layers.{i}.{name}")
    for name in names:
        if name in state_dict:
            state_dict[name] = (state_dict[name].float() + 1.0).to(state_dict[name].dtype)


def _move(state_dict: dict[str, torch.Tensor], source: str, target: str) -> None:
    if source in state_dict:
        state_dict[target] = state_dict.pop(source)


def _fuse(state_dict: dict[str, torch.Tensor], sources: list[str], target: str) -> None:
    """Concatenate `sources` along rows into `target`, only when all are present (else the load reports them)."""
    if all(source in state_dict for source in sources):
        state_dict[target] = torch.cat([state_dict.pop(source) for source in sources])


def _stack_experts(state_dict: dict[str, torch.Tensor], source: str, target: str, num_experts: int) -> None:
    """Per-expert gate/up/down matrices into `[E, 2I, H]` and `[E, H, I]` tensors."""
    for moe_prefix in _MOE_PREFIXES:
        for gate_name, up_name, down_name in _EXPERT_NAMES:
            expert = source + moe_prefix + "experts.{e}."
            suffixes = (gate_name, up_name, down_name)
            names = [expert.format(e=e) + suffix for e in range(num_experts) for suffix in suffixes]
            if not all(name in state_dict for name in names):
                continue
            gate_up, down = [], []
            for e in range(num_experts):
                prefix = expert.format(e=e)
                gate_up.append(torch.cat((state_dict.pop(prefix + gate_name), state_dict.pop(prefix + up_name))))
                down.append(state_dict.pop(prefix + down_name))
            state_dict[target + "ffn.experts_gate_up"] = torch.stack(gate_up)
            state_dict[target + "ffn.experts_down"] = torch.stack(down)
