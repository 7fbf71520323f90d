"""Decode and prefill speed of the engine against transformers on the same SmolLM2-135M weights.

Measured in one run, on the same weights (the embedded GGUF, dequantized once):

- single-stream greedy decode tokens/s: `engine.generate` (default dtype) vs transformers `generate`
  in float32 and in bfloat16 (targets: >= 2x HF fp32, >= 1.2x HF bf16);
- batch of 8 aggregate decode tokens/s vs single-stream decode tokens/s (target: >= 5x); both are
  decode rates (the time of a 1-token generation, i.e. prefill, subtracted), over 8 distinct prompts;
- prefill of a 500-token prompt vs transformers (target: >= 1x);
- the engine's per-step overhead: step time minus the model runner's forward time;
- llama.cpp (llama-cpp-python, built by benchmarks/install_llama_cpp.sh) on the same GGUF when it is
  installed, in the same interleaved rounds: single-stream greedy generation (prompt included, as for
  the engine) and the 500-token prefill (targets: >= 1x both), with as many threads as torch uses.

Each measurement is repeated (engine and peer interleaved) and the median is kept; warm-up runs are
reported separately. The last line is one JSON object with the configuration, git revision and results.

    python benchmarks/decode.py [--smoke]
"""

from __future__ import annotations

import argparse
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
from runtime.loading import default_model_path, load_checkpoint  # noqa: E402

SEED = 0


def git_revision() -> str:
    """The checked-out commit, or "unknown" outside a git checkout."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10)
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return "unknown"
    return result.stdout.strip()


def hf_model(dtype: torch.dtype) -> torch.nn.Module:
    """transformers' Llama with the engine's weights (the embedded GGUF, dequantized by our loader)."""
    import transformers

    path = default_model_path()
    config = transformers.AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    model.load_state_dict(dict(load_checkpoint(None).weights), strict=False)  # lm_head is tied
    return model.to(dtype)


def hf_generate(model: torch.nn.Module, prompt_ids: list[int], num_tokens: int) -> None:
    """Greedy-decode exactly `num_tokens` tokens with transformers' `generate` (EOS does not stop it)."""
    with torch.inference_mode():
        model.generate(
            torch.tensor([prompt_ids]),
            max_new_tokens=num_tokens,
            min_new_tokens=num_tokens,
            do_sample=False,
            pad_token_id=0,
        )


class ForwardClock:
    """Wraps a model runner's forward to time it, so a run's remaining time is the engine's own
    (scheduling, sampling, detokenizing): the control-plane overhead."""

    def __init__(self, engine: runtime.Engine) -> None:
        self._forward = engine.runner.forward
        engine.runner.forward = self
        self.seconds = 0.0
        self.num_calls = 0

    def __call__(self, batch: object) -> torch.Tensor:
        start = time.perf_counter()
        logits = self._forward(batch)
        self.seconds += time.perf_counter() - start
        self.num_calls += 1
        return logits

    def reset(self) -> None:
        """Start timing a new run."""
        self.seconds, self.num_calls = 0.0, 0


def measure(args: argparse.Namespace) -> dict[str, object]:
    """Warm every case up once, then time them interleaved; tokens/s and overheads by name."""
    torch.manual_seed(SEED)
    num_tokens, repeats = (16, 1) if args.smoke else (args.num_tokens, args.repeats)
    prefill_len = 64 if args.smoke else 500
    results: dict[str, object] = {}

    start = time.perf_counter()
    engine = runtime.load(max_model_len=2048)
    results["engine_load_s"] = time.perf_counter() - start
    prompt_ids = engine.tokenizer.apply_chat_template([{"role": "user", "content": "Tell me a story."}], tokenize=True)
    topics = ["the sea", "a robot", "winter", "a lost key", "the moon", "a small town", "a dragon", "music"]
    batch_ids = [
        engine.tokenizer.apply_chat_template(
            [{"role": "user", "content": f"Tell me a story about {t}."}], tokenize=True
        )
        for t in topics
    ]
    long_prompt = engine.tokenizer.encode("The quick brown fox jumps over the lazy dog. " * 60)[:prefill_len]
    greedy = runtime.SamplingParams(temperature=0.0, max_tokens=num_tokens, ignore_eos=True)
    peers = {} if args.skip_transformers else {"hf_fp32": hf_model(torch.float32), "hf_bf16": hf_model(torch.bfloat16)}
    cases: dict[str, Callable[[], object]] = {
        "engine_single": lambda: engine.generate([prompt_ids], greedy),
        "engine_single_prefill": lambda: engine.generate([prompt_ids], greedy.replace(max_tokens=1)),
        "engine_batch8": lambda: engine.generate(batch_ids, greedy),
        "engine_batch8_prefill": lambda: engine.generate(batch_ids, greedy.replace(max_tokens=1)),
        "engine_prefill": lambda: engine.generate([long_prompt], greedy.replace(max_tokens=1)),
    }
    for name, model in peers.items():
        cases[f"{name}_single"] = lambda model=model: hf_generate(model, prompt_ids, num_tokens)
        cases[f"{name}_prefill"] = lambda model=model: hf_generate(model, long_prompt, 1)
    cases.update(llama_cpp_cases(prompt_ids, long_prompt, num_tokens))

    start = time.perf_counter()
    for run in cases.values():
        run()
    results["warmup_s"] = time.perf_counter() - start

    # Prefix caching would skip repeated prompts after the first run; measure cold prefill every time.
    engine.block_manager.enable_prefix_caching = False
    clock = ForwardClock(engine)
    timings: dict[str, list[float]] = {name: [] for name in cases}
    overheads, forward_shares = [], []
    for _ in range(repeats):  # interleaved, so a burst of machine load hits every side alike
        for name, run in cases.items():
            clock.reset()
            start = time.perf_counter()
            run()
            elapsed = time.perf_counter() - start
            timings[name].append(elapsed)
            if name == "engine_single":
                overheads.append((elapsed - clock.seconds) / clock.num_calls)
                forward_shares.append(clock.seconds / elapsed)
    seconds = {name: statistics.median(values) for name, values in timings.items()}
    results["engine_step_overhead_us"] = statistics.median(overheads) * 1e6
    results["engine_overhead_fraction"] = 1.0 - statistics.median(forward_shares)
    results["engine_single_tok_s"] = num_tokens / seconds["engine_single"]
    results["engine_single_decode_tok_s"] = (num_tokens - 1) / (
        seconds["engine_single"] - seconds["engine_single_prefill"]
    )
    results["engine_batch8_decode_tok_s"] = (
        8 * (num_tokens - 1) / (seconds["engine_batch8"] - seconds["engine_batch8_prefill"])
    )
    results["engine_prefill_tok_s"] = len(long_prompt) / seconds["engine_prefill"]
    for name in peers:
        results[f"{name}_single_tok_s"] = num_tokens / seconds[f"{name}_single"]
        results[f"{name}_prefill_tok_s"] = len(long_prompt) / seconds[f"{name}_prefill"]
    has_llama_cpp = "llama_cpp_single" in seconds
    results["llama_cpp_single_tok_s"] = num_tokens / seconds["llama_cpp_single"] if has_llama_cpp else None
    results["llama_cpp_prefill_tok_s"] = len(long_prompt) / seconds["llama_cpp_prefill"] if has_llama_cpp else None
    return results


def llama_cpp_cases(prompt_ids: list[int], long_prompt: list[int], num_tokens: int) -> dict[str, Callable[[], object]]:
    """llama.cpp's greedy generation and prefill on the same GGUF and thread count; none when not installed.

    Its KV cache is reset before every run: `generate` would otherwise reuse the previous run's prompt.
    """
    try:
        import llama_cpp
    except ImportError:
        print("llama-cpp-python is not installed (benchmarks/install_llama_cpp.sh): skipping the llama.cpp comparison")
        return {}
    threads = torch.get_num_threads()
    llm = llama_cpp.Llama(
        model_path=str(default_model_path()), n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False
    )

    def single() -> None:
        llm.reset()
        for count, _ in enumerate(llm.generate(prompt_ids, temp=0.0, reset=True), start=1):
            if count == num_tokens:
                break

    def prefill() -> None:
        llm.reset()
        llm.eval(long_prompt)

    return {"llama_cpp_single": single, "llama_cpp_prefill": prefill}


def report(results: dict[str, object]) -> dict[str, float | None]:
    """Print the measurements and the ratios against each target; returns the ratios."""

    def ratio(numerator: str, denominator: str) -> float | None:
        top, bottom = results.get(numerator), results.get(denominator)
        return None if top is None or bottom is None else top / bottom

    ratios = {
        "single_vs_hf_fp32": ratio("engine_single_tok_s", "hf_fp32_single_tok_s"),
        "single_vs_hf_bf16": ratio("engine_single_tok_s", "hf_bf16_single_tok_s"),
        "batch8_vs_single": ratio("engine_batch8_decode_tok_s", "engine_single_decode_tok_s"),
        "prefill_vs_hf_fp32": ratio("engine_prefill_tok_s", "hf_fp32_prefill_tok_s"),
        "prefill_vs_hf_bf16": ratio("engine_prefill_tok_s", "hf_bf16_prefill_tok_s"),
        "single_vs_llama_cpp": ratio("engine_single_tok_s", "llama_cpp_single_tok_s"),
        "prefill_vs_llama_cpp": ratio("engine_prefill_tok_s", "llama_cpp_prefill_tok_s"),
    }
    targets = {
        "single_vs_hf_fp32": 2.0,
        "single_vs_hf_bf16": 1.2,
        "batch8_vs_single": 5.0,
        "prefill_vs_hf_bf16": 1.0,
        "single_vs_llama_cpp": 1.0,
        "prefill_vs_llama_cpp": 1.0,
    }
    for name, value in results.items():
        print(f"{name:32s} {value:10.2f}" if isinstance(value, float) else f"{name:32s} {value}")
    for name, value in ratios.items():
        target = targets.get(name)
        verdict = ""
        if target is not None and value is not None:
            verdict = f"  (target >= {target:.1f}: {'met' if value >= target else 'MISSED'})"
        print(f"{name:32s} {'n/a' if value is None else f'{value:10.2f}x'}{verdict}")
    return ratios


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark; the last printed line is the JSON record."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a few tokens, one repeat: runs in seconds")
    parser.add_argument("--num-tokens", type=int, default=128, help="tokens decoded per stream")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median kept)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for every side (default: torch's)")
    parser.add_argument("--skip-transformers", action="store_true", help="leave the transformers peers out")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    results = measure(args)
    ratios = report(results)
    config = {
        "model": "SmolLM2-135M-Instruct (embedded GGUF)",
        "engine_dtype": str(runtime.DEFAULT_DTYPE),
        "num_tokens": 16 if args.smoke else args.num_tokens,
        "repeats": 1 if args.smoke else args.repeats,
        "threads": torch.get_num_threads(),
        "smoke": args.smoke,
        "seed": SEED,
    }
    record = {"benchmark": "decode", "config": config, "git_revision": git_revision(), "results": results}
    print(json.dumps({**record, "ratios": ratios}))


if __name__ == "__main__":
    main()
