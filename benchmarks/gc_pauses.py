"""The garbage collector's pauses in a server meeting new schemas, with and without freezing what
start-up made (`sdk.server.app.freeze_start_up`, which `stencil serve` runs once it is up).

Two child processes, one after the other in the same run, start as `stencil serve` does (the
embedded model loaded by `LocalBackend.load`, the app made: torch's modules, the runtime and the
weights, ~200k objects the cyclic collector tracks); the second then freezes them. Each compiles
`--limit` JSONSchemaBench schemas new to it and masks each along its instance's tokenization, as a
server meets new tool and output schemas, over the engine's own vocabulary. Printed per child: the collector's full (generation 2)
collections, their summed and longest pause, all its pauses summed, and the loop's wall time; then
the plain child's figures over the frozen one's.

    .venv/bin/python benchmarks/gc_pauses.py [--limit N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
TOKENIZER = SHARED / "bench" / "smollm2-135m-instruct.tokenizer.json"
CORPUS = SHARED / "corpus" / "schemas" / "jsonschemabench"
MODES = ("plain", "frozen")


def child(mode: str, limit: int) -> dict[str, float]:
    """One process's pauses: start as the server does, freeze where `mode` says, then the schemas."""
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(SHARED / "bench"))
    import peer_mask_bench as pmb
    from gc_clock import GcClock

    import grammars
    from grammars.errors import GrammarError
    from sdk.backends.local import LocalBackend
    from sdk.server.app import create_app, freeze_start_up

    backend = LocalBackend.load()
    create_app(backend, served_model_name="gc-pauses")
    if mode == "frozen":
        freeze_start_up()
    vocab = backend.engine.vocabulary  # built on first use, after start-up, as in the server
    tok = pmb.Tok(str(TOKENIZER), None)
    clock = GcClock(time.perf_counter)
    start = time.perf_counter()
    for case in pmb.corpus_cases(str(CORPUS), limit):
        try:
            matcher = grammars.compile(case["schema"], cache=False).matcher(vocab)
        except GrammarError:
            continue
        for token_id in tok.encode(json.dumps(case["instance"])):
            matcher.mask()
            if not matcher.try_advance(token_id):
                break
    seconds = time.perf_counter() - start
    backend.close()
    return {
        "full_collections": clock.full_collections,
        "full_pauses_s": clock.full_seconds,
        "longest_full_pause_s": clock.longest_full,
        "all_pauses_s": clock.seconds,
        "loop_s": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=100, help="corpus schemas each process compiles")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.limit)))
        return
    results = {}
    for mode in MODES:
        command = [sys.executable, __file__, "--child", mode, "--limit", str(args.limit)]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{mode:7s} " + "  ".join(f"{name} {value:.3f}" for name, value in results[mode].items()))
    plain, frozen = results["plain"], results["frozen"]
    ratios = {
        name: plain[name] / frozen[name] if frozen[name] else None
        for name in ("full_pauses_s", "longest_full_pause_s", "all_pauses_s", "loop_s")
    }
    for name, ratio in ratios.items():
        print(f"plain / frozen {name:22s} " + ("n/a (no pause frozen)" if ratio is None else f"{ratio:6.2f}x"))
    print(json.dumps({"benchmark": "gc_pauses", "limit": args.limit, "results": results, "ratios": ratios}))


if __name__ == "__main__":
    main()
