"""The decode plan (`runtime.model.decode_plan`) against the modules it stands in for: bitwise the same
logits in decode, batched and verify passes, and the modules wherever the plan does not apply."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
import torch

import runtime
from runtime.loading.hf import config_from_hf
from runtime.model import kernels
from runtime.model.architectures import Quantization, build_model
from runtime.model.decode_plan import DecodePlan
from runtime.model.runner import ForwardBatch, ModelRunner
from tests.runtime.hf_oracle import model_config_from_hf, tiny_hf_model
from tests.runtime.test_families import tiny_family_model

pytestmark = pytest.mark.skipif(not kernels.has_compiled_kernels(), reason=str(kernels.KERNELS_UNAVAILABLE_REASON))


def _tiny_runner(name: str, *, qk_norm: bool = False, quantization: Quantization = Quantization.INT4) -> ModelRunner:
    """A runner over a tiny random model of `name` (tests/runtime/hf_oracle.py) in bfloat16; with
    `qk_norm`, random per-head query and key norms added (Qwen3's)."""
    hf_model = tiny_hf_model(name)
    config, weights = model_config_from_hf(hf_model.config), dict(hf_model.state_dict())
    if qk_norm:
        config = dataclasses.replace(config, has_qk_norm=True)
        generator = torch.Generator().manual_seed(1)
        for i in range(config.num_layers):
            for norm in ("q_norm", "k_norm"):
                weights[f"model.layers.{i}.self_attn.{norm}.weight"] = 1 + 0.2 * torch.randn(
                    config.head_dim, generator=generator
                )
    model = build_model(config, weights, dtype=torch.bfloat16, quantization=quantization)
    return ModelRunner(model, num_blocks=32, block_size=4)


def _passes(runner: ModelRunner) -> list[torch.Tensor]:
    """Logits of a prefill then decode, batched and verify passes over two random sequences."""
    rng = random.Random(0)
    first, second = ([rng.randrange(97) for _ in range(length)] for length in (11, 6))
    tables = [list(range(0, 8)), list(range(8, 16))]
    runner.forward(ForwardBatch([first[:8], second[:3]], [0, 0], tables, all_logits=True, is_prefill=True))
    return [
        runner.forward(ForwardBatch([[first[8]]], [8], tables[:1])),
        runner.forward(ForwardBatch([[first[9]], [second[3]]], [9, 3], tables)),
        runner.forward(ForwardBatch([first[10:], second[4:]], [10, 4], tables, all_logits=True)),
    ]


def _assert_plan_gives_the_modules_logits(runner: ModelRunner) -> None:
    assert runner.decode_plan is not None
    planned = _passes(runner)
    runner.decode_plan = None
    for with_plan, with_modules in zip(planned, _passes(runner), strict=True):
        assert torch.equal(with_plan, with_modules)


@pytest.mark.parametrize(
    "name, qk_norm", [("llama", False), ("qwen2", False), ("mistral_window", False), ("llama", True)]
)
def test_the_plan_gives_the_modules_logits_bitwise(name: str, qk_norm: bool) -> None:
    """Plain blocks, a q/k/v bias (Qwen2), a sliding window shorter than the sequence (Mistral) and
    per-head q/k norms (Qwen3)."""
    _assert_plan_gives_the_modules_logits(_tiny_runner(name, qk_norm=qk_norm))


def test_the_plan_gives_gemma3s_modules_logits_bitwise() -> None:
    """Gemma 3's blocks: norms after attention and after the feed-forward, local layers with their own rope
    base and a window shorter than the sequences, global layers with scaled rope, QK-norm, GeGLU."""
    hf_model = tiny_family_model("gemma3_text")
    config = config_from_hf(hf_model.config.to_dict(), Path("tiny-gemma3"))
    assert config.local_layers and config.local_window is not None and config.local_window < 11
    model = build_model(config, dict(hf_model.state_dict()), dtype=torch.bfloat16, quantization=Quantization.INT4)
    _assert_plan_gives_the_modules_logits(ModelRunner(model, num_blocks=32, block_size=4))


def test_the_modules_run_where_the_plan_does_not_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    """No plan for a sparse MoE, for unquantized or 8-bit linears; prefill passes and the SDPA
    attention path keep the modules even with one."""
    assert _tiny_runner("qwen2_moe").decode_plan is None
    assert _tiny_runner("llama", quantization=Quantization.NONE).decode_plan is None
    assert _tiny_runner("llama", quantization=Quantization.INT8).decode_plan is None
    runner = _tiny_runner("llama")
    plan = runner.decode_plan
    assert plan is not None
    runs: list[int] = []
    run = DecodePlan.run
    monkeypatch.setattr(DecodePlan, "run", lambda self, *args: (runs.append(1), run(self, *args))[1])
    _passes(runner)
    assert len(runs) == 3  # the three decode and verify passes, not the prefill
    runner.compiled_attention = False
    _passes(runner)
    assert len(runs) == 3


@pytest.mark.slow
def test_the_plan_gives_the_modules_logits_on_smollm2() -> None:
    """The embedded model in its default mode: the plan applies, and its decode, batched and verify
    passes are bitwise the modules'."""
    runner = runtime.load().runner
    assert runner.decode_plan is not None
    tables = [list(range(0, 8)), list(range(8, 16))]
    prompts = [[1, 9690, 198, 2683, 314, 253, 5356, 30], [1, 4093, 28, 2683, 314]]

    def passes() -> list[torch.Tensor]:
        runner.forward(ForwardBatch(prompts, [0, 0], tables, all_logits=True, is_prefill=True))
        return [
            runner.forward(ForwardBatch([[42]], [8], tables[:1])),
            runner.forward(ForwardBatch([[43], [44]], [9, 5], tables)),
            runner.forward(ForwardBatch([[45, 46, 47, 48], [49, 50]], [10, 6], tables, all_logits=True)),
        ]

    planned = passes()
    plan, runner.decode_plan = runner.decode_plan, None
    try:
        for with_plan, with_modules in zip(planned, passes(), strict=True):
            assert torch.equal(with_plan, with_modules)
    finally:
        runner.decode_plan = plan
