"""Schema compile time over the whole JSONSchemaBench + SchemaStore corpus, against llguidance in the same run.

Every schema of `../shared/corpus/schemas` is compiled once by Stencil (`schema_grammar` +
`compile_grammar`, no cache) and once by llguidance (grammar and matcher). Printed: Stencil's
median, p90 and maximum compile time, how many schemas take over 1 s (target: none), and the
median ratio to llguidance over the schemas both compile. The process compiles 1,210 schemas and
so accumulates a million interned byte-regex terms: the cyclic garbage collector's full passes then
pause for a good fraction of a second, so its pauses are timed apart and reported separately
(a compilation in a fresh process, or in a server that runs `gc.freeze()` after warm-up, has none).
`--clock cpu` times the compiling thread's CPU time instead of wall-clock time (steadier on a shared
machine; the collector's pauses still count apart). `--python-derivatives` derives lexer
rows and searches emptiness with `byte_regex`'s Python derivatives instead of the compiled ones.

    .venv/bin/python benchmarks/compile.py [--stride N] [--clock wall|cpu] [--python-derivatives]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(SHARED / "bench"))

import peer_mask_bench as pmb  # noqa: E402
from gc_clock import GcClock  # noqa: E402

from grammars.compiler import compile_grammar  # noqa: E402
from grammars.core import byte_regex as rx  # noqa: E402
from grammars.errors import EmptyLanguageError, GrammarError  # noqa: E402
from grammars.frontends.json_schema import schema_grammar  # noqa: E402
from tests.grammars.test_schema_corpus import bench_cases, schemastore_cases  # noqa: E402

TOKENIZER = SHARED / "bench" / "smollm2-135m-instruct.tokenizer.json"
SLOW_SECONDS = 1.0
#: What a compile time counts: elapsed time, or the CPU time of this (the compiling) thread.
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.thread_time}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stride", type=int, default=1, help="every N-th schema of each group (1: all)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall", help="what a compile time counts")
    parser.add_argument(
        "--python-derivatives",
        action="store_true",
        help="lexer rows and emptiness by Python derivatives, not compiled ones",
    )
    args = parser.parse_args()
    if args.python_derivatives:
        rx.compiled_derivatives = None
    now = CLOCKS[args.clock]
    llguidance = pmb.LLGuidanceEngine(pmb.Tok(str(TOKENIZER), None), threads=1)
    clock = GcClock(now)
    rows = []
    for group, case in [*bench_cases(args.stride), *schemastore_cases(args.stride)]:
        paused = clock.seconds
        start = now()
        try:
            compile_grammar(schema_grammar(case.schema, resources=case.resources))
            outcome = "compiled"
        except EmptyLanguageError:
            outcome = "compiled"  # proved to admit nothing: counted as the conformance tests count it
        except GrammarError as exc:
            outcome = type(exc).__name__
        seconds = now() - start - (clock.seconds - paused)
        peer_seconds = None
        if not case.resources:  # llguidance resolves no external documents
            start = now()
            try:
                llguidance.compile(json.dumps(case.schema))
                peer_seconds = now() - start
            except Exception:  # noqa: BLE001 - the peer's refusal, whatever its type
                pass
        rows.append(
            {
                "group": group,
                "name": case.name,
                "outcome": outcome,
                "seconds": seconds,
                "llguidance_seconds": peer_seconds,
            }
        )

    times = sorted(row["seconds"] for row in rows)
    slow = sorted((row for row in rows if row["seconds"] > SLOW_SECONDS), key=lambda row: -row["seconds"])
    both = [row for row in rows if row["outcome"] == "compiled" and row["llguidance_seconds"]]
    ratio = statistics.median(row["seconds"] / row["llguidance_seconds"] for row in both) if both else None
    results = {
        "schemas": len(rows),
        "compiled": sum(row["outcome"] == "compiled" for row in rows),
        "median_ms": statistics.median(times) * 1e3,
        "p90_ms": times[int(0.9 * (len(times) - 1))] * 1e3,
        "max_s": times[-1],
        "over_1s": len(slow),
        "median_ratio_vs_llguidance": ratio,
        "ratio_schemas": len(both),
        "gc_pauses_s": clock.seconds,
        "longest_gc_pause_s": clock.longest,
        "full_gc_collections": clock.full_collections,
    }
    for row in sorted(rows, key=lambda row: -row["seconds"])[:10]:
        print(f"{row['seconds']:7.3f} s  {row['group']}/{row['name']}  {row['outcome']}")
    for name, value in results.items():
        print(f"{name:28s} {value:10.3f}" if isinstance(value, float) else f"{name:28s} {value}")
    verdict = "met" if not slow else "MISSED: " + ", ".join(row["name"] for row in slow)
    print(f"no compile over {SLOW_SECONDS:.0f} s (collector pauses excluded): {verdict}")
    config = {"stride": args.stride, "clock": args.clock, "python_derivatives": args.python_derivatives}
    print(json.dumps({"benchmark": "compile", **config, "results": results}))


if __name__ == "__main__":
    main()
