"""Mixture-of-experts decode with quantized experts against the dense bfloat16 experts, same model, same run.

A random Mixtral-shaped model (no MoE checkpoint ships with the package; the shapes, not the values, set the
speed): `--hidden` inputs, `--experts` experts of `--expert-size` each, 2 chosen per token, `--layers` layers.
Built three times from the same weights: `Quantization.NONE` (bfloat16, the experts' stacked matrices
multiplied by `F.linear`), `Quantization.INT4` (every matrix 4-bit, the experts one `Int4Linear` each), and
`INT4` with the experts left dense as before they were quantized (`int4_dense_experts`). Measured, in
interleaved rounds (medians): decode steps at 64 cached tokens, single stream and a batch of 8, through the
`ModelRunner`; and the bytes the experts' weights take.

    python benchmarks/moe.py [--threads 1 --clock cpu]

The last line is one JSON object with the results.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.forward import add_clock_argument, interleaved_seconds  # noqa: E402
from runtime.config import ModelConfig  # noqa: E402
from runtime.model.architectures import Quantization, build_model  # noqa: E402
from runtime.model.layers.moe import SparseMoE  # noqa: E402
from runtime.model.runner import ForwardBatch, ModelRunner  # noqa: E402

BLOCK_SIZE, CONTEXT = 16, 64


def _config(args: argparse.Namespace) -> ModelConfig:
    return ModelConfig(
        architecture="mixtral",
        vocab_size=32000,
        hidden_size=args.hidden,
        intermediate_size=args.expert_size,
        num_layers=args.layers,
        num_heads=args.hidden // 128,
        num_kv_heads=max(1, args.hidden // 512),
        max_position_embeddings=4096,
        num_experts=args.experts,
        num_experts_per_tok=2,
        norm_topk_prob=True,
        tie_word_embeddings=False,
    )


def _weights(config: ModelConfig) -> dict[str, torch.Tensor]:
    """Random Hugging Face-named weights, matrices scaled by 1 / sqrt(inputs) so activations stay in range."""
    generator = torch.Generator().manual_seed(0)
    return {
        name: torch.randn(shape.shape, generator=generator) / shape.shape[-1] ** 0.5 if shape.dim() > 1 else shape
        for name, shape in _zeros(config).items()
    }


def _zeros(config: ModelConfig) -> dict[str, torch.Tensor]:
    """The model's tensors, matrices as zeros (their shapes) and norms as ones."""
    hidden, size, experts = config.hidden_size, config.intermediate_size, config.num_experts
    head_dim = hidden // config.num_heads
    weights = {
        "model.embed_tokens.weight": torch.zeros(config.vocab_size, hidden),
        "model.norm.weight": torch.ones(hidden),
        "lm_head.weight": torch.zeros(config.vocab_size, hidden),
    }
    for i in range(config.num_layers):
        prefix = f"model.layers.{i}."
        weights |= {
            prefix + "input_layernorm.weight": torch.ones(hidden),
            prefix + "post_attention_layernorm.weight": torch.ones(hidden),
            prefix + "self_attn.q_proj.weight": torch.zeros(hidden, hidden),
            prefix + "self_attn.k_proj.weight": torch.zeros(config.num_kv_heads * head_dim, hidden),
            prefix + "self_attn.v_proj.weight": torch.zeros(config.num_kv_heads * head_dim, hidden),
            prefix + "self_attn.o_proj.weight": torch.zeros(hidden, hidden),
            prefix + "block_sparse_moe.gate.weight": torch.zeros(experts, hidden),
        }
        for e in range(experts):
            expert = f"{prefix}block_sparse_moe.experts.{e}."
            weights |= {
                expert + "w1.weight": torch.zeros(size, hidden),
                expert + "w3.weight": torch.zeros(size, hidden),
                expert + "w2.weight": torch.zeros(hidden, size),
            }
    return weights


def _expert_bytes(model: torch.nn.Module) -> int:
    """Bytes of the experts' weights: the stacked matrices, or the quantized layers' buffers."""
    total = 0
    for moe in (module for module in model.modules() if isinstance(module, SparseMoE)):
        if moe.gate_up_layers is not None and moe.down_layers is not None:
            tensors = [*moe.gate_up_layers.buffers(), *moe.down_layers.buffers()]
        else:
            tensors = [moe.experts_gate_up, moe.experts_down]
        total += sum(t.numel() * t.element_size() for t in tensors)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--expert-size", type=int, default=1024)
    parser.add_argument("--experts", type=int, default=16)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    add_clock_argument(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    config = _config(args)
    weights = _weights(config)
    models = {
        "bf16": build_model(config, weights, dtype=torch.bfloat16),
        "int4": build_model(config, weights, dtype=torch.bfloat16, quantization=Quantization.INT4),
    }
    quantize_experts = SparseMoE.quantize_experts
    SparseMoE.quantize_experts = lambda *args, **kwargs: None  # type: ignore[method-assign]  # as before this round
    try:
        models["int4_dense_experts"] = build_model(
            config, weights, dtype=torch.bfloat16, quantization=Quantization.INT4
        )
    finally:
        SparseMoE.quantize_experts = quantize_experts  # type: ignore[method-assign]
    generator = torch.Generator().manual_seed(1)
    cases: dict[str, Callable[[], None]] = {}
    for name, model in models.items():
        for batch in (1, 8):
            blocks = -(-(CONTEXT + args.steps + 1) // BLOCK_SIZE)
            runner = ModelRunner(model, num_blocks=blocks * batch, block_size=BLOCK_SIZE)
            tables = [list(range(i * blocks, (i + 1) * blocks)) for i in range(batch)]
            prompts = [torch.randint(0, config.vocab_size, (CONTEXT,), generator=generator).tolist() for _ in tables]
            runner.forward(ForwardBatch(prompts, [0] * batch, tables, is_prefill=True))

            def steps(runner: ModelRunner = runner, tables: list[list[int]] = tables, batch: int = batch) -> None:
                for step in range(args.steps):
                    tokens = [[(7 * step + b) % config.vocab_size] for b in range(batch)]
                    runner.forward(ForwardBatch(tokens, [CONTEXT + step] * batch, tables))

            cases[f"{name}_batch{batch}"] = steps
    seconds = interleaved_seconds(cases, args.rounds, clock)
    tok_s = {
        name: args.steps * int(name.rsplit("batch", 1)[1]) / statistics.median(values)
        for name, values in seconds.items()
    }
    expert_mb = {name: _expert_bytes(model) / 2**20 for name, model in models.items()}
    shape = f"hidden {args.hidden}, {args.experts} experts of {args.expert_size}, top-2, {args.layers} layers"
    print(f"Mixtral-shaped MoE ({shape}); {args.threads} threads, clock {args.clock}")
    for name, value in tok_s.items():
        print(f"  {name:<14}{value:>9.1f} tok/s")
    for batch in (1, 8):
        int4 = tok_s[f"int4_batch{batch}"]
        print(
            f"  batch {batch}: int4 with int4 experts {int4 / tok_s[f'int4_dense_experts_batch{batch}']:.2f}x int4 with"
            f" dense bfloat16 experts, {int4 / tok_s[f'bf16_batch{batch}']:.2f}x bfloat16"
        )
    print("  expert weights: " + ", ".join(f"{name} {mib:.0f} MiB" for name, mib in expert_mb.items()))
    print(json.dumps({"config": vars(args), "tok_s": tok_s, "expert_mib": expert_mb}))


if __name__ == "__main__":
    main()
