"""Tiny synthetic checkpoints for loader tests: random HF-named weights, written as a GGUF the way
llama.cpp's `convert_hf_to_gguf.py` writes them, or as a Hugging Face folder.

The GGUF writer here is the test's own statement of llama.cpp's conventions (tensor names, stacked
experts, the Q/K permutation copied from the converter), independent of the loader under test.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from gguf import GGMLQuantizationType, GGUFWriter, TokenType
from safetensors.torch import save_file

from runtime.tokenizer import byte_level_alphabet
from tests.runtime.ggml_reference import random_k_blocks

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["Ġ t", "h e", "Ġt he", "l l", "ll o"]


def tiny_vocab() -> tuple[list[str], list[int], list[str]]:
    """(tokens, token types, merges) of a small byte-level BPE vocabulary with three control tokens."""
    alphabet = byte_level_alphabet()
    tokens = SPECIAL_TOKENS + [alphabet[byte] for byte in range(256)] + [merge.replace(" ", "") for merge in MERGES]
    types = [TokenType.CONTROL] * len(SPECIAL_TOKENS) + [TokenType.NORMAL] * (len(tokens) - len(SPECIAL_TOKENS))
    return tokens, types, list(MERGES)


def hf_to_gguf_permute(weights: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    """`LlamaModel.permute` from llama.cpp's convert_hf_to_gguf.py, verbatim."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


@dataclass
class TinySpec:
    """Shape of a tiny model; `gguf_architecture` is llama.cpp's name (llama, qwen2, qwen2moe)."""

    gguf_architecture: str = "llama"
    hidden_size: int = 64
    num_heads: int = 4
    num_kv_heads: int = 2
    num_layers: int = 2
    intermediate_size: int = 96
    num_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 32
    shared_expert_intermediate_size: int = 0
    is_tied: bool = True
    vocab: tuple[list[str], list[int], list[str]] = field(default_factory=tiny_vocab)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab[0])

    @property
    def has_bias(self) -> bool:
        return self.gguf_architecture in ("qwen2", "qwen2moe")

    @property
    def hf_architecture(self) -> str:
        if self.gguf_architecture == "llama":
            return "mixtral" if self.num_experts else "llama"
        return {"qwen2": "qwen2", "qwen2moe": "qwen2_moe"}[self.gguf_architecture]


def tiny_hf_weights(spec: TinySpec, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 weights under HF names, [out, in] like HF."""
    rng = np.random.default_rng(seed)
    head_dim = spec.hidden_size // spec.num_heads
    h, kv = spec.hidden_size, spec.num_kv_heads * head_dim

    def rand(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    weights = {"model.embed_tokens.weight": rand(spec.vocab_size, h), "model.norm.weight": rand(h)}
    if not spec.is_tied:
        weights["lm_head.weight"] = rand(spec.vocab_size, h)
    for i in range(spec.num_layers):
        p = f"model.layers.{i}."
        weights.update({p + "input_layernorm.weight": rand(h), p + "post_attention_layernorm.weight": rand(h)})
        for name, rows in (("q", h), ("k", kv), ("v", kv), ("o", h)):
            weights[f"{p}self_attn.{name}_proj.weight"] = rand(rows, h)
            if spec.has_bias and name != "o":
                weights[f"{p}self_attn.{name}_proj.bias"] = rand(rows)
        if not spec.num_experts:
            f = spec.intermediate_size
            weights.update(
                {
                    p + "mlp.gate_proj.weight": rand(f, h),
                    p + "mlp.up_proj.weight": rand(f, h),
                    p + "mlp.down_proj.weight": rand(h, f),
                }
            )
        elif spec.hf_architecture == "mixtral":
            f = spec.intermediate_size
            weights[p + "block_sparse_moe.gate.weight"] = rand(spec.num_experts, h)
            for e in range(spec.num_experts):
                q = f"{p}block_sparse_moe.experts.{e}."
                weights.update({q + "w1.weight": rand(f, h), q + "w2.weight": rand(h, f), q + "w3.weight": rand(f, h)})
        else:
            f = spec.moe_intermediate_size
            weights[p + "mlp.gate.weight"] = rand(spec.num_experts, h)
            for e in range(spec.num_experts):
                q = f"{p}mlp.experts.{e}."
                weights.update(
                    {
                        q + "gate_proj.weight": rand(f, h),
                        q + "up_proj.weight": rand(f, h),
                        q + "down_proj.weight": rand(h, f),
                    }
                )
            s = spec.shared_expert_intermediate_size
            weights.update(
                {
                    p + "mlp.shared_expert.gate_proj.weight": rand(s, h),
                    p + "mlp.shared_expert.up_proj.weight": rand(s, h),
                    p + "mlp.shared_expert.down_proj.weight": rand(h, s),
                    p + "mlp.shared_expert_gate.weight": rand(1, h),
                }
            )
    return weights


_GGUF_LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "block_sparse_moe.gate.weight": "ffn_gate_inp.weight",
    "mlp.gate.weight": "ffn_gate_inp.weight",
    "mlp.shared_expert.gate_proj.weight": "ffn_gate_shexp.weight",
    "mlp.shared_expert.up_proj.weight": "ffn_up_shexp.weight",
    "mlp.shared_expert.down_proj.weight": "ffn_down_shexp.weight",
    "mlp.shared_expert_gate.weight": "ffn_gate_inp_shexp.weight",
}
_EXPERT_ROLES = {"w1": "gate", "w2": "down", "w3": "up", "gate_proj": "gate", "up_proj": "up", "down_proj": "down"}


def gguf_tensors(spec: TinySpec, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """HF weights under llama.cpp names and layouts: permuted Q/K (llama family), stacked experts."""
    out: dict[str, np.ndarray] = {}
    experts: dict[str, dict[int, np.ndarray]] = {}
    for name, value in weights.items():
        if name == "model.embed_tokens.weight":
            out["token_embd.weight"] = value
        elif name == "model.norm.weight":
            out["output_norm.weight"] = value
        elif name == "lm_head.weight":
            out["output.weight"] = value
        else:
            _, _, layer, rest = name.split(".", 3)
            if ".experts." in rest:
                _, expert, proj, _ = rest.rsplit(".", 3)
                key = f"blk.{layer}.ffn_{_EXPERT_ROLES[proj]}_exps.weight"
                experts.setdefault(key, {})[int(expert)] = value
                continue
            if spec.gguf_architecture == "llama" and rest.startswith(("self_attn.q_proj", "self_attn.k_proj")):
                n_kv = spec.num_heads if rest.startswith("self_attn.q_proj") else spec.num_kv_heads
                value = hf_to_gguf_permute(value, spec.num_heads, n_kv)
            out[f"blk.{layer}.{_GGUF_LAYER_NAMES[rest]}"] = value
    for key, by_expert in experts.items():
        out[key] = np.stack([by_expert[e] for e in sorted(by_expert)])  # [num_experts, out, in]
    return out


def write_tiny_gguf(
    path: Path,
    spec: TinySpec,
    weights: dict[str, np.ndarray],
    *,
    omit: tuple[str, ...] = (),
    extra_tensors: dict[str, np.ndarray] | None = None,
    tensor_type: GGMLQuantizationType = GGMLQuantizationType.F32,
    layer_tensor_types: dict[str, GGMLQuantizationType] | None = None,
) -> Path:
    """Write `weights` as a GGUF file with full metadata and a byte-level tokenizer; returns `path`.

    `layer_tensor_types` overrides `tensor_type` by layer tensor name (`blk.1.attn_q.weight`) or stem
    (`attn_q.weight`, every layer); K-quants, which
    `gguf` cannot quantize, get random blocks (`ggml_reference.random_k_blocks`) instead of the weights.
    """
    arch = spec.gguf_architecture
    writer = GGUFWriter(path, arch)
    writer.add_name("tiny test model")
    writer.add_block_count(spec.num_layers)
    writer.add_context_length(256)
    writer.add_embedding_length(spec.hidden_size)
    writer.add_feed_forward_length(spec.intermediate_size)
    writer.add_head_count(spec.num_heads)
    writer.add_head_count_kv(spec.num_kv_heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(spec.hidden_size // spec.num_heads)
    if spec.num_experts:
        writer.add_expert_count(spec.num_experts)
        writer.add_expert_used_count(spec.num_experts_per_tok)
        if arch == "qwen2moe":
            writer.add_expert_feed_forward_length(spec.moe_intermediate_size)
            writer.add_expert_shared_feed_forward_length(spec.shared_expert_intermediate_size)
    tokens, types, merges = spec.vocab
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(False)
    tensors = {**gguf_tensors(spec, weights), **(extra_tensors or {})}
    rng = np.random.default_rng(0)
    for name, value in tensors.items():
        if name in omit:
            continue
        stem = name.split(".", 2)[-1]
        types = layer_tensor_types or {}
        own_type = types.get(name, types.get(stem, tensor_type)) if name.startswith("blk.") else tensor_type
        if own_type == GGMLQuantizationType.F32 or value.ndim == 1:
            writer.add_tensor(name, value)
        elif own_type.name.endswith("_K"):
            blocks = random_k_blocks(own_type.name, value.shape[0], value.shape[1] // 256, rng)
            writer.add_tensor(name, blocks, raw_dtype=own_type)
        else:
            from gguf.quants import quantize

            writer.add_tensor(name, quantize(value, own_type), raw_dtype=own_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_tiny_hf_folder(
    folder: Path, spec: TinySpec, weights: dict[str, np.ndarray], tokenizer_json: Path, *, num_shards: int = 1
) -> Path:
    """Write an HF model folder: config.json, safetensors (sharded with an index when num_shards > 1), tokenizer."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "model_type": spec.hf_architecture,
        "hidden_act": "silu",
        "vocab_size": spec.vocab_size,
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_layers,
        "num_attention_heads": spec.num_heads,
        "num_key_value_heads": spec.num_kv_heads,
        "max_position_embeddings": 256,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": spec.is_tied,
        "eos_token_id": 2,
        "bos_token_id": 1,
    }
    (folder / "config.json").write_text(json.dumps(config))
    names = sorted(weights)
    weight_map = {}
    for shard in range(num_shards):
        shard_name = (
            "model.safetensors" if num_shards == 1 else f"model-{shard + 1:05d}-of-{num_shards:05d}.safetensors"
        )
        part = {name: torch.from_numpy(weights[name]) for name in names[shard::num_shards]}
        save_file(part, str(folder / shard_name))
        weight_map.update(dict.fromkeys(part, shard_name))
    if num_shards > 1:
        (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (folder / "tokenizer.json").write_text(tokenizer_json.read_text())
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {"eos_token": "<|im_end|>", "bos_token": "<|im_start|>", "chat_template": "{{ messages[0]['content'] }}"}
        )
    )
    return folder
