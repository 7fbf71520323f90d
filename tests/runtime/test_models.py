"""The decoder against transformers: tiny random models of every architecture, and SmolLM2 itself."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import runtime.model.architectures.build as build_module
import runtime.model.quantization as quantization_module
from runtime.errors import CorruptModelError, UnsupportedModelError
from runtime.loading import default_model_path, load_checkpoint
from runtime.loading.gguf_blocks import BlockCodes
from runtime.model.architectures import Quantization, build_model
from runtime.model.block_codes import BlockCodeLinear
from runtime.model.runner import ForwardBatch, ModelRunner
from tests.runtime.hf_oracle import TINY_CONFIGS, hf_logits, model_config_from_hf, prefill_all, tiny_hf_model

SEQUENCES = [
    [3, 17, 42, 8, 91, 5, 5, 60, 2, 33, 71, 12, 9, 88, 40, 1, 23],
    [7, 7, 7, 50],
    [64, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
]


@pytest.mark.parametrize("name", sorted(TINY_CONFIGS))
def test_logits_match_transformers_fp32(name: str) -> None:
    hf_model = tiny_hf_model(name)
    model = build_model(model_config_from_hf(hf_model.config), dict(hf_model.state_dict()), dtype=torch.float32)
    for sequence, logits in zip(SEQUENCES, prefill_all(model, SEQUENCES), strict=True):
        torch.testing.assert_close(logits, hf_logits(hf_model, sequence), atol=1e-4, rtol=0)


def _split_experts(state_dict: dict[str, torch.Tensor], names: tuple[str, str, str], moe_prefix: str) -> dict:
    """transformers 5's stacked expert tensors as the per-expert tensors Hub checkpoints store."""
    gate_name, up_name, down_name = names
    out = {}
    for key, tensor in state_dict.items():
        if key.endswith(".mlp.experts.gate_up_proj"):
            layer = key.removesuffix("mlp.experts.gate_up_proj") + moe_prefix
            for e, (gate, up) in enumerate(zip(*tensor.chunk(2, dim=1))):
                out[f"{layer}experts.{e}.{gate_name}"] = gate
                out[f"{layer}experts.{e}.{up_name}"] = up
        elif key.endswith(".mlp.experts.down_proj"):
            layer = key.removesuffix("mlp.experts.down_proj") + moe_prefix
            for e, down in enumerate(tensor):
                out[f"{layer}experts.{e}.{down_name}"] = down
        elif key.endswith(".mlp.gate.weight"):
            out[key.removesuffix("mlp.gate.weight") + moe_prefix + "gate.weight"] = tensor
        else:
            out[key] = tensor
    return out


@pytest.mark.parametrize(
    ("name", "expert_names", "moe_prefix"),
    [
        ("mixtral", ("w1.weight", "w3.weight", "w2.weight"), "block_sparse_moe."),
        ("qwen2_moe", ("gate_proj.weight", "up_proj.weight", "down_proj.weight"), "mlp."),
    ],
)
def test_hub_per_expert_names_load_the_same_model(name: str, expert_names: tuple, moe_prefix: str) -> None:
    hf_model = tiny_hf_model(name)
    weights = _split_experts(hf_model.state_dict(), expert_names, moe_prefix)
    assert any(".experts.1." in key for key in weights)
    model = build_model(model_config_from_hf(hf_model.config), weights, dtype=torch.float32)
    (logits,) = prefill_all(model, SEQUENCES[:1])
    torch.testing.assert_close(logits, hf_logits(hf_model, SEQUENCES[0]), atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["mixtral", "qwen2_moe"])
def test_router_stats_count_the_experts_transformers_picks(name: str) -> None:
    hf_model = tiny_hf_model(name)
    config = model_config_from_hf(hf_model.config)
    model = build_model(config, dict(hf_model.state_dict()), dtype=torch.float32)
    prefill_all(model, SEQUENCES)
    stats = model.router_stats()
    assert len(stats) == config.num_layers
    num_tokens = sum(map(len, SEQUENCES))
    with torch.no_grad():
        hf_out = hf_model(torch.tensor([SEQUENCES[0]]), output_router_logits=True, use_cache=False)
    for layer_stats in stats:
        assert layer_stats.num_tokens == num_tokens
        torch.testing.assert_close(layer_stats.expert_fraction.sum(), torch.tensor(1.0))
        torch.testing.assert_close(layer_stats.mean_router_prob.sum(), torch.tensor(1.0))
        assert 1.0 <= layer_stats.load_balance <= config.num_experts
    # The first sequence alone: the experts transformers' router picks, counted per layer.
    model.reset_router_stats()
    assert model.router_stats()[0].num_tokens == 0
    prefill_all(model, SEQUENCES[:1])
    for layer_stats, router_logits in zip(model.router_stats(), hf_out.router_logits, strict=True):
        top_ids = router_logits.float().softmax(-1).topk(config.num_experts_per_tok, dim=-1).indices
        expected = torch.bincount(top_ids.flatten(), minlength=config.num_experts).float()
        torch.testing.assert_close(layer_stats.expert_fraction, expected / expected.sum())
        torch.testing.assert_close(layer_stats.mean_router_prob, router_logits.float().softmax(-1).mean(0))


def test_dense_model_has_no_router_stats() -> None:
    hf_model = tiny_hf_model("llama")
    model = build_model(model_config_from_hf(hf_model.config), dict(hf_model.state_dict()), dtype=torch.float32)
    assert model.router_stats() == []


#: The projections and stacked expert matrices ([E, N, K]) a quantized model stores quantized.
_MATRIX_SUFFIXES = ("proj.weight", "experts.gate_up_proj", "experts.down_proj")


def _snap_to_q4_1(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Projection and expert weights moved onto GGUF Q4_1's grid: 16 levels from each group of 32 inputs' minimum."""
    snapped = {}
    for name, weight in weights.items():
        if name.endswith(_MATRIX_SUFFIXES) and weight.shape[-1] % 32 == 0:
            groups = weight.view(*weight.shape[:-1], -1, 32)
            minimum = groups.amin(-1, keepdim=True)
            scale = (groups.amax(-1, keepdim=True) - minimum) / 15
            weight = (((groups - minimum) / scale).round() * scale + minimum).view_as(weight)
        snapped[name] = weight
    return snapped


def _q8_block_codes(weights: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, BlockCodes]]:
    """Projection and expert weights moved onto an int8 grid per block of 16 inputs (absmax / 127), and their
    codes."""
    snapped, codes = dict(weights), {}
    for name, weight in weights.items():
        if name.endswith(_MATRIX_SUFFIXES) and weight.shape[-1] % 32 == 0:
            blocks = weight.float().view(*weight.shape[:-1], -1, 16)
            scales = blocks.abs().amax(-1) / 127  # [..., N, K / 16]
            block_codes = (blocks / scales[..., None]).round().to(torch.int8)
            snapped[name] = (block_codes.float() * scales[..., None]).view_as(weight)
            arrays = (block_codes.view_as(weight), scales, torch.zeros_like(scales))
            codes[name] = BlockCodes(*(t.numpy() for t in arrays))
    return snapped, codes


@pytest.mark.parametrize("name", ["llama", "qwen2", "mixtral"])
@pytest.mark.parametrize("quantization", list(Quantization))
def test_bfloat16_and_quantized_models_stay_close_to_fp32(name: str, quantization: Quantization) -> None:
    """bf16 and int8 on any weights; int4 on weights already 4-bit (what it is for: GGUF Q4_1); stored block
    codes on weights already on their grid (a file's); a mixture of experts' experts quantized as well."""
    hf_model = tiny_hf_model(name)
    config, weights = model_config_from_hf(hf_model.config), dict(hf_model.state_dict())
    codes = None
    if quantization is Quantization.INT4:
        weights = _snap_to_q4_1(weights)
    if quantization is Quantization.STORED:
        weights, codes = _q8_block_codes(weights)
    reference = prefill_all(build_model(config, weights, dtype=torch.float32), SEQUENCES)
    model = build_model(config, weights, dtype=torch.bfloat16, quantization=quantization, block_codes=codes)
    if codes is not None:
        assert isinstance(model.layers[0].attn.qkv, BlockCodeLinear)
    if name == "mixtral":  # the experts quantized too, one layer per matrix
        assert (model.layers[0].ffn.gate_up_layers is None) == (quantization is Quantization.NONE)
    for expected, logits in zip(reference, prefill_all(model, SEQUENCES), strict=True):
        cosine = torch.nn.functional.cosine_similarity(logits, expected, dim=-1)
        assert cosine.min() > 0.99


@pytest.mark.parametrize("quantization", [Quantization.INT4, Quantization.STORED])
def test_the_model_is_read_and_quantized_one_layer_at_a_time(
    quantization: Quantization, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each decoder layer's weights are read, cast and quantized before the next layer's are read (so a large
    model's dense weights never exist whole); the head last."""
    hf_model = tiny_hf_model("llama")
    config, weights = model_config_from_hf(hf_model.config), _snap_to_q4_1(dict(hf_model.state_dict()))
    codes = None
    if quantization is Quantization.STORED:
        weights, codes = _q8_block_codes(weights)
    events: list[str] = []

    class Logged(dict[str, torch.Tensor]):
        def __getitem__(self, name: str) -> torch.Tensor:
            events.append("read " + name)
            return super().__getitem__(name)

    swapped = quantization_module.swap_linears

    def logged_swap(module: torch.nn.Module, head_names: tuple[str, ...], layer_of, *, prefix: str = "") -> None:
        events.append(f"quantize {prefix or head_names}")
        swapped(module, head_names, layer_of, prefix=prefix)

    monkeypatch.setattr(build_module, "swap_linears", logged_swap)
    build_model(config, Logged(weights), dtype=torch.bfloat16, quantization=quantization, block_codes=codes)
    layer_of_event = [event.split("layers.")[1].split(".")[0] if "layers." in event else "head" for event in events]
    quantized = [i for i, event in enumerate(events) if event.startswith("quantize")]
    assert [layer_of_event[i] for i in quantized] == [str(i) for i in range(config.num_layers)] + ["head"]
    for layer, at in enumerate(quantized[:-1]):
        reads = [layer_of_event[i] for i, event in enumerate(events[:at]) if event.startswith("read")]
        assert reads.count(str(layer)) > 0 and str(layer + 1) not in reads


def test_build_model_rejects_what_it_cannot_run() -> None:
    hf_model = tiny_hf_model("llama")
    config, weights = model_config_from_hf(hf_model.config), dict(hf_model.state_dict())
    with pytest.raises(UnsupportedModelError, match="gpt2"):
        build_model(dataclasses.replace(config, architecture="gpt2"), weights, dtype=torch.float32)
    with pytest.raises(UnsupportedModelError, match="float16"):
        build_model(config, weights, dtype=torch.float16)
    with pytest.raises(UnsupportedModelError, match="bfloat16"):
        build_model(config, weights, dtype=torch.float32, quantization=Quantization.INT8)
    for rope_type in ("dynamic", "yarn"):
        scaled = dataclasses.replace(config, rope_scaling={"rope_type": rope_type, "factor": 2.0})
        with pytest.raises(UnsupportedModelError, match=rope_type):
            build_model(scaled, weights, dtype=torch.float32)
    incomplete = dataclasses.replace(config, rope_scaling={"rope_type": "llama3", "factor": 8.0})
    with pytest.raises(UnsupportedModelError, match="low_freq_factor"):
        build_model(incomplete, weights, dtype=torch.float32)
    missing = {k: v for k, v in weights.items() if "layers.1.self_attn.k_proj" not in k}
    with pytest.raises(CorruptModelError, match="layers.1.attn.qkv.weight"):
        build_model(config, missing, dtype=torch.float32)
    with pytest.raises(CorruptModelError, match="layers.1.attn.qkv.weight"):  # not quantized from nothing
        build_model(config, missing, dtype=torch.bfloat16, quantization=Quantization.INT4)
    with pytest.raises(UnsupportedModelError, match="model.extra.weight"):
        build_model(config, {**weights, "model.extra.weight": torch.zeros(3)}, dtype=torch.float32)
    wrong_shape = {**weights, "model.norm.weight": torch.ones(7)}
    with pytest.raises(CorruptModelError, match="norm.weight"):
        build_model(config, wrong_shape, dtype=torch.float32)


# SmolLM2-135M-Instruct, the embedded default model. transformers dequantizes the GGUF itself, so the
# oracle does not depend on our loader; our model is built through runtime.loading.


@pytest.fixture(scope="module")
def smollm2_hf():
    import transformers
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    path = str(default_model_path())
    hf_model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**load_gguf_checkpoint(path)["config"]))
    tensors = load_gguf_checkpoint(path, return_tensors=True, model_to_load=hf_model)["tensors"]
    hf_model.load_state_dict(tensors, strict=False)
    hf_model.tie_weights()
    return hf_model.eval()


def _greedy(runner: ModelRunner, prompt: list[int], num_tokens: int) -> list[int]:
    table = list(range(runner.num_blocks))
    logits = runner.forward(ForwardBatch([prompt], [0], [table]))
    generated = []
    for _ in range(num_tokens):
        generated.append(int(logits[0].argmax()))
        logits = runner.forward(ForwardBatch([generated[-1:]], [len(prompt) + len(generated) - 1], [table]))
    return generated


@pytest.mark.slow
def test_smollm2_matches_transformers_fp32(smollm2_hf) -> None:
    checkpoint = load_checkpoint(None)
    prompt = checkpoint.tokenizer.encode("The capital of France is Paris. The capital of Italy is")
    model = build_model(checkpoint.config, dict(checkpoint.weights), dtype=torch.float32)
    runner = ModelRunner(model, num_blocks=4, block_size=16)
    logits = runner.forward(ForwardBatch([prompt], [0], [list(range(4))], all_logits=True))
    torch.testing.assert_close(logits, hf_logits(smollm2_hf, prompt), atol=1e-4, rtol=0)
    with torch.no_grad():
        expected = smollm2_hf.generate(torch.tensor([prompt]), max_new_tokens=16, min_new_tokens=16, do_sample=False)
    runner = ModelRunner(model, num_blocks=4, block_size=16)
    assert _greedy(runner, prompt, 16) == expected[0, len(prompt) :].tolist()
