"""Token-mask speed of Stencil against llguidance and XGrammar, measured in the same run.

Uses the shared peer harness (`../shared/bench/peer_mask_bench.py`: same tokenizer, same schemas,
same bitmask buffers, each engine fed the canonical tokenization of a valid instance) and prints,
per engine: compile time, time to first mask, per-token mask p50/p99 over warm passes, the first
(cold) pass mean, and Stencil's ratios to each peer; plus the memory a compiled Stencil constraint
holds after the run. Warm passes reuse the compiled constraint (as a server does for a repeated
schema), so Stencil's per-state mask cache is hot there; the cold first pass is reported separately.

    .venv/bin/python benchmarks/masks.py [--smoke] [--corpus] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(SHARED / "bench"))

import peer_mask_bench as pmb  # noqa: E402

TOKENIZER = SHARED / "bench" / "smollm2-135m-instruct.tokenizer.json"
CORPUS = SHARED / "corpus" / "schemas" / "jsonschemabench"


class UncachedStencil(pmb.StencilEngine):
    """Stencil through the shared harness, compiling afresh each time (no compile cache), so
    compile and time-to-first-mask are honest; process-wide lexer state caches stay warm."""

    def compile(self, schema_str: str):
        return self.g.compile(json.loads(schema_str), cache=False)


def compiled_memory_bytes(tok: pmb.Tok, case: dict) -> int:
    """Bytes allocated by compiling one schema and masking one pass over its instance (fresh process
    caches excepted: the per-vocabulary lexer walks are shared by every schema and not counted)."""
    import grammars

    vocab = grammars.Vocabulary.from_tokenizer(str(TOKENIZER))
    ids = tok.encode(json.dumps(case["instance"]))
    warm = grammars.compile(case["schema"]).matcher(vocab)  # warm shared caches with one pass
    for token_id in ids:
        warm.mask()
        warm.advance(token_id)
    tracemalloc.start()
    constraint = grammars.compile(case["schema"], cache=False)
    matcher = constraint.matcher(vocab)
    for token_id in ids:
        matcher.mask()
        matcher.advance(token_id)
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return current


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="two built-in cases, one pass")
    parser.add_argument("--corpus", action="store_true", help="JSONSchemaBench cases instead of the built-in five")
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--engines", default="stencil,llguidance,xgrammar")
    parser.add_argument(
        "--python-walk", action="store_true", help="Stencil's numpy vocabulary walk instead of the compiled one"
    )
    args = parser.parse_args()
    if args.python_walk:
        from grammars.masking import token_walk

        token_walk.native_walk = None

    tok = pmb.Tok(str(TOKENIZER), None)
    cases = pmb.corpus_cases(str(CORPUS), args.limit) if args.corpus else pmb.builtin_cases()
    passes, reps = args.passes, 3
    if args.smoke:
        cases, passes, reps = cases[:2], 1, 1
    engines = []
    factories = {**pmb.ENGINES, "stencil": UncachedStencil}
    for name in args.engines.split(","):
        try:
            engines.append(factories[name](tok, 1))
        except Exception as exc:  # a peer that is not installed is reported, not fatal
            print(f"engine {name} unavailable: {type(exc).__name__}: {exc}")
    results: dict[str, list[dict]] = {e.name: [] for e in engines}
    for case in cases:
        tokens = tok.encode(json.dumps(case["instance"]))
        print(f"\n== {case['name']} ({len(tokens)} tokens)")
        for engine in engines:
            r = pmb.bench_case(engine, case, tokens, passes, reps)
            results[engine.name].append(r)
            if "error" in r:
                print(f"  {engine.name:12s} ERROR {r['error'][:120]}")
                continue
            mu = r["mask_us"]
            print(
                f"  {engine.name:12s} ok={r['ok']!s:5s} compile={r['compile_ms_median']:8.2f} ms "
                f"ttfm={r['ttfm_ms_median']:8.2f} ms  mask p50={mu['p50']:7.1f} p99={mu['p99']:8.1f} us  "
                f"cold pass mean={r['first_pass_mask_us_mean']:8.1f} us"
            )

    summary = _summary(results)
    print("\n== summary (medians over cases both engines compiled and passed)")
    for line in summary["lines"]:
        print(line)
    passed = {r["case"] for r in results.get("stencil", []) if r.get("ok")}
    memory = [compiled_memory_bytes(tok, c) for c in cases if c["name"] in passed]
    if memory:
        print(
            f"compiled constraint memory (stencil): median {statistics.median(memory) / 1e6:.2f} MB, "
            f"max {max(memory) / 1e6:.2f} MB"
        )
    revision = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    print(
        json.dumps(
            {
                "benchmark": "masks",
                "revision": revision,
                "cases": len(cases),
                "passes": passes,
                "python_walk": args.python_walk,
                "ratios": summary["ratios"],
                "memory_bytes_median": statistics.median(memory) if memory else None,
            }
        )
    )


def _summary(results: dict[str, list[dict]]) -> dict:
    lines, ratios = [], {}
    ours = results.get("stencil", [])
    for peer, theirs in results.items():
        if peer == "stencil":
            continue
        pairs = [(a, b) for a, b in zip(ours, theirs) if a.get("ok") and b.get("ok")]
        if not pairs:
            continue
        metric = {
            "mask_p50": lambda r: r["mask_us"]["p50"],
            "mask_p99": lambda r: r["mask_us"]["p99"],
            "ttfm": lambda r: r["ttfm_ms_median"],
            "compile": lambda r: r["compile_ms_median"],
            "cold_pass_mean": lambda r: r["first_pass_mask_us_mean"],
        }
        ratios[peer] = {}
        for name, get in metric.items():
            ratio = statistics.median(get(a) / max(get(b), 1e-9) for a, b in pairs)
            ratios[peer][name] = round(ratio, 3)
            lines.append(
                f"stencil / {peer:10s} {name:15s} = {ratio:7.2f}x  (n={len(pairs)}; < 1 means stencil is faster)"
            )
    failed = [r["case"] for r in ours if not r.get("ok")]
    if failed:
        lines.append(f"stencil failed or errored on: {failed}")
    return {"lines": lines, "ratios": ratios}


if __name__ == "__main__":
    main()
