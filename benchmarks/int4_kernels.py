"""The compiled W4 kernel against torch's int4 kernel and the dense bfloat16 matmul, on SmolLM2-135M's shapes.

For each linear shape of SmolLM2-135M (576->1536, 1536->576, 576->576, 576->192, and the 49152x576
output head's approximate logits) and each row count (1, 2, 4, 8, 16, 32, 64), in one run on the same
weights: `Int4Linear`'s compiled kernel, torch's int4 kernel (`Int4Linear` without the compiled
kernels) and `F.linear` on the dequantized bfloat16 weight. The three are timed in interleaved
rounds (each once per round) and the median kept, so a busy machine slows all alike; the first call
of each is a separate warm-up. Printed: microseconds per call, and torch-int4 / compiled and dense /
compiled time ratios (above 1: the compiled kernel is faster).

With `--step`, also a decode step's compiled calls as the model makes them: each of the 211 distinct
weights of SmolLM2-135M (30 layers of 7 linears, then the head: 84 MB, far more than the caches) once,
per row count, with the weights in separate torch allocations (4 KiB pages) and in one mapping of
2 MiB pages (`runtime.model.huge_pages`, as `quantize` places them), in interleaved rounds: the
ratio above 1 is what the page size saves. With `--baseline PATH`, the same step (2 MiB pages, 1 to 8
rows) run by this build of the kernels and by another one (PATH: its `_quantized_linear*.so`, say one
built in a worktree of an earlier commit), both loaded in this process and interleaved: the ratio above
1 is what this build saves. Separate processes' runs differ by more than a kernel change of 5-10%. The
last line is one JSON record.

    python benchmarks/int4_kernels.py [--smoke] [--step] [--baseline PATH] [--threads N] [--clock cpu]
"""

from __future__ import annotations

import argparse
import functools
import importlib.machinery
import importlib.util
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from decode import git_revision  # noqa: E402

from runtime.model import kernels  # noqa: E402
from runtime.model.huge_pages import in_huge_pages  # noqa: E402
from runtime.model.quantization import Int4Linear, pack_int4_tiles  # noqa: E402

SEED = 0
#: (name, outputs, inputs): SmolLM2-135M's linears, the head last.
SHAPES = [
    ("576->1536", 1536, 576),
    ("1536->576", 576, 1536),
    ("576->576", 576, 576),
    ("576->192", 192, 576),
    ("head 49152x576", 49152, 576),
]
ROW_COUNTS = [1, 2, 4, 8, 16, 32, 64]
#: One SmolLM2-135M decoder layer's linears (q, k, v, o, gate, up, down) as (outputs, inputs), and its layers.
LAYER_SHAPES = [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536)]
NUM_LAYERS = 30
HEAD_SHAPE = (49152, 576)
STEP_ROW_COUNTS = [1, 2, 4, 8]
BASELINE_ROW_COUNTS = [1, 2, 3, 4, 5, 6, 7, 8]
PEERS = ["compiled", "torch_int4", "dense_bf16"]
#: Calls per timed sample are chosen so a sample lasts about this long.
SAMPLE_SECONDS = 0.02


def peers(num_outputs: int, num_inputs: int) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """The three ways to multiply by one random weight, quantized once."""
    torch.manual_seed(SEED)
    linear = nn.Linear(num_inputs, num_outputs, bias=False).to(torch.bfloat16)
    compiled = Int4Linear.from_linear(linear, uses_compiled_kernel=True)
    reference = Int4Linear.from_linear(linear, uses_compiled_kernel=False)
    packed, scales_and_offsets = reference.packed, reference.scales_and_offsets
    dense = compiled.dequantize()
    return {
        "compiled": compiled,
        # torch's kernel itself: the layer would switch to the dense weights past MAX_QUANTIZED_KERNEL_ROWS.
        "torch_int4": lambda x: torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, 32, scales_and_offsets),
        "dense_bf16": lambda x: F.linear(x, dense),
    }


#: The clock every measurement reads; `--clock cpu` swaps in process CPU time (see main).
CLOCK = time.perf_counter


def time_calls(function: Callable[[], object], num_calls: int) -> float:
    """Seconds per call over `num_calls` calls."""
    start = CLOCK()
    for _ in range(num_calls):
        function()
    return (CLOCK() - start) / num_calls


def measure(num_outputs: int, num_inputs: int, num_rows: int, repeats: int) -> dict[str, dict[str, float]]:
    """Median and warm-up seconds per call of each peer, interleaved."""
    functions = peers(num_outputs, num_inputs)
    x = torch.randn(num_rows, num_inputs, dtype=torch.bfloat16)
    calls = {name: lambda f=f: f(x) for name, f in functions.items()}
    with torch.inference_mode():
        warmup = {name: time_calls(call, 1) for name, call in calls.items()}
        num_calls = {name: max(1, int(SAMPLE_SECONDS / max(time_calls(call, 3), 1e-7))) for name, call in calls.items()}
        samples: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(repeats):
            for name, call in calls.items():
                samples[name].append(time_calls(call, num_calls[name]))
    return {name: {"median_s": statistics.median(samples[name]), "warmup_s": warmup[name]} for name in calls}


Weight = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def step_weights() -> list[Weight]:
    """Random codes, scales and bases for each weight of a SmolLM2-135M decode step, in call order."""
    generator = torch.Generator().manual_seed(SEED)
    weights = []
    for num_outputs, num_inputs in [*LAYER_SHAPES * NUM_LAYERS, HEAD_SHAPE]:
        codes = torch.randint(0, 16, (num_outputs, num_inputs), generator=generator)
        shape = (num_outputs // 16, num_inputs // 32, 16)
        scales = (torch.rand(shape, generator=generator) / 64).to(torch.bfloat16)
        bases = (torch.randn(shape, generator=generator) / 8).to(torch.bfloat16)
        weights.append((pack_int4_tiles(codes), scales, bases))
    return weights


#: A build of the kernels' `int4_linear` (x, tiles, scales, bases) -> y.
Int4Call = Callable[..., torch.Tensor]


def measure_step(variants: dict[str, tuple[list[Weight], Int4Call]], num_rows: int, repeats: int) -> dict[str, float]:
    """Median seconds of one decode step's calls per variant (its weights and the kernel build that runs
    them), interleaved, and the first variant's time over the second's (the median of each round's ratio)."""
    first_weights = next(iter(variants.values()))[0]
    inputs = {k: torch.randn(num_rows, k, dtype=torch.bfloat16) for k in {w[0].shape[1] * 32 for w in first_weights}}

    def step(weights: list[Weight], int4_linear: Int4Call) -> None:
        for tiles, scales, bases in weights:
            int4_linear(inputs[tiles.shape[1] * 32], tiles, scales, bases)

    samples: dict[str, list[float]] = {name: [] for name in variants}
    ratios = []
    first, second = list(variants)
    with torch.inference_mode():
        for variant in variants.values():
            step(*variant)  # warm-up
        for _ in range(repeats):
            for name, variant in variants.items():
                samples[name].append(time_calls(functools.partial(step, *variant), 1))
            ratios.append(samples[first][-1] / samples[second][-1])
    medians = {f"{name}_s": statistics.median(times) for name, times in samples.items()}
    return {**medians, f"{first}_over_{second}": statistics.median(ratios)}


def compare_steps(
    variants: dict[str, tuple[list[Weight], Int4Call]],
    labels: tuple[str, str, str],
    row_counts: list[int],
    repeats: int,
) -> list[dict[str, object]]:
    """`measure_step` of two variants at each row count, printed a line each (their milliseconds and the
    first's time over the second's, under `labels`)."""
    first, second = variants
    print(f"{'decode step':<16}{'rows':>5}{labels[0]:>15}{labels[1]:>15}{labels[2]:>11}")
    results: list[dict[str, object]] = []
    for num_rows in row_counts:
        timing = measure_step(variants, num_rows, repeats)
        print(
            f"{'':<16}{num_rows:>5}{timing[f'{first}_s'] * 1e3:>15.2f}{timing[f'{second}_s'] * 1e3:>15.2f}"
            f"{timing[f'{first}_over_{second}']:>10.2f}x"
        )
        results.append({"rows": num_rows, "timing": timing})
    return results


def load_baseline(path: Path) -> ModuleType:
    """Another build of the kernel extension, loaded beside this one: under another package name, whose
    last part (`_quantized_linear`) still names its init function."""
    name = "baseline_build._quantized_linear"
    loader = importlib.machinery.ExtensionFileLoader(name, str(path))
    spec = importlib.util.spec_from_loader(name, loader)
    if spec is None:
        sys.exit(f"cannot load {path} as the kernel extension")
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark; the last printed line is the JSON record."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="rows 1 and 8, one repeat: runs in seconds")
    parser.add_argument("--step", action="store_true", help="also a decode step's calls: 4 KiB vs 2 MiB pages")
    parser.add_argument(
        "--baseline", type=Path, default=None, help="also a decode step's calls: this build vs the extension at PATH"
    )
    parser.add_argument("--repeats", type=int, default=7, help="timed samples per measurement (median kept)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="cpu: process CPU time, robust to other processes sharing the cores (use with --threads 1)",
    )
    args = parser.parse_args(argv)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    if not kernels.has_compiled_kernels():
        sys.exit(f"the compiled kernels are unavailable: {kernels.KERNELS_UNAVAILABLE_REASON}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    row_counts, repeats = ([1, 8], 1) if args.smoke else (ROW_COUNTS, args.repeats)
    results = []
    print(
        f"{'shape':<16}{'rows':>5}"
        + "".join(f"{name + ' us':>15}" for name in PEERS)
        + f"{'int4/comp':>11}{'dense/comp':>11}"
    )
    for name, num_outputs, num_inputs in SHAPES:
        for num_rows in row_counts:
            timing = measure(num_outputs, num_inputs, num_rows, repeats)
            medians = {peer: timing[peer]["median_s"] for peer in PEERS}
            ratios = {
                "torch_int4_over_compiled": medians["torch_int4"] / medians["compiled"],
                "dense_bf16_over_compiled": medians["dense_bf16"] / medians["compiled"],
            }
            print(
                f"{name:<16}{num_rows:>5}"
                + "".join(f"{medians[peer] * 1e6:>15.1f}" for peer in PEERS)
                + f"{ratios['torch_int4_over_compiled']:>10.2f}x{ratios['dense_bf16_over_compiled']:>10.2f}x"
            )
            results.append({"shape": name, "rows": num_rows, "timing": timing, "ratios": ratios})
    step_results: list[dict[str, object]] = []
    baseline_results: list[dict[str, object]] = []
    if args.step or args.baseline is not None:
        plain = step_weights()
        placed = iter(in_huge_pages([t for weight in plain for t in weight]))  # one mapping, as `quantize` does
        huge = [(next(placed), next(placed), next(placed)) for _ in plain]
    if args.step:
        pages = {"4k_pages": (plain, kernels.int4_linear), "huge_pages": (huge, kernels.int4_linear)}
        labels = ("4k pages ms", "huge pages ms", "4k/huge")
        step_results = compare_steps(pages, labels, [1, 8] if args.smoke else STEP_ROW_COUNTS, repeats)
    if args.baseline is not None:
        builds = {
            "baseline": (huge, load_baseline(args.baseline).int4_linear),
            "this_build": (huge, kernels.int4_linear),
        }
        labels = ("baseline ms", "this build ms", "base/this")
        baseline_results = compare_steps(builds, labels, [1, 8] if args.smoke else BASELINE_ROW_COUNTS, repeats)
    config = {
        "threads": torch.get_num_threads(),
        "clock": args.clock,
        "repeats": repeats,
        "smoke": args.smoke,
        "step": args.step,
        "baseline": None if args.baseline is None else str(args.baseline),
        "seed": SEED,
    }
    record = {"benchmark": "kernels", "config": config, "git_revision": git_revision(), "results": results}
    print(json.dumps({**record, "step": step_results, "baseline_step": baseline_results}))


if __name__ == "__main__":
    main()
