"""Concurrent `generate()` calls on one LLM against the same calls one at a time (the embedded model).

Eight typed-extraction calls (greedy, a Pydantic output, so both modes do the same work) run first
one after another, then all at once with `asyncio.gather`; the engine's scheduler batches the
concurrent ones into each forward pass. Reported: completion tokens per second of each mode and
their ratio, per round and as the median over rounds. Rounds alternate which mode goes first, so a
busy machine slows both alike; the warm-up call (compiling the grammar, first masks) is reported
separately and not counted.

    python benchmarks/concurrency.py            # 8 calls, 3 rounds
    python benchmarks/concurrency.py --smoke    # 3 calls, 1 round, short outputs

Needs the package importable (scripts/install.sh installs it editable; or PYTHONPATH=.).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import time
from pathlib import Path

from pydantic import BaseModel, Field

import sdk

PEOPLE = [
    ("Ada Lovelace", 36, "mathematician"),
    ("Alan Turing", 41, "computer scientist"),
    ("Grace Hopper", 85, "admiral"),
    ("Marie Curie", 66, "physicist"),
    ("Nikola Tesla", 86, "inventor"),
    ("Rosalind Franklin", 37, "chemist"),
    ("Carl Sagan", 62, "astronomer"),
    ("Hedy Lamarr", 85, "actress"),
]


class Person(BaseModel):
    name: str = Field(max_length=32)
    age: int = Field(ge=0, le=130)
    occupation: str = Field(max_length=32)


def _prompts(num_calls: int) -> list[str]:
    return [
        f"Extract the person: {name} was a {occupation} who died at the age of {age}."
        for name, age, occupation in (PEOPLE * (num_calls // len(PEOPLE) + 1))[:num_calls]
    ]


def _git_revision() -> str:
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
    return result.stdout.strip() or "uncommitted"


async def _sequential(llm: sdk.LLM, prompts: list[str], max_tokens: int) -> tuple[int, float]:
    start = time.perf_counter()
    num_tokens = 0
    for prompt in prompts:
        result = await llm.run(prompt, output=Person, max_tokens=max_tokens)
        num_tokens += result.usage.completion_tokens
    return num_tokens, time.perf_counter() - start


async def _concurrent(llm: sdk.LLM, prompts: list[str], max_tokens: int) -> tuple[int, float]:
    start = time.perf_counter()
    results = await asyncio.gather(*(llm.run(p, output=Person, max_tokens=max_tokens) for p in prompts))
    return sum(r.usage.completion_tokens for r in results), time.perf_counter() - start


async def _measure(num_calls: int, num_rounds: int, max_tokens: int) -> dict[str, object]:
    load_start = time.perf_counter()
    llm = sdk.LLM()
    load_s = time.perf_counter() - load_start
    prompts = _prompts(num_calls)
    warmup_start = time.perf_counter()
    await llm.run(prompts[0], output=Person, max_tokens=max_tokens)
    warmup_s = time.perf_counter() - warmup_start
    rounds = []
    for index in range(num_rounds):
        if index % 2 == 0:
            sequential = await _sequential(llm, prompts, max_tokens)
            concurrent = await _concurrent(llm, prompts, max_tokens)
        else:
            concurrent = await _concurrent(llm, prompts, max_tokens)
            sequential = await _sequential(llm, prompts, max_tokens)
        sequential_tps, concurrent_tps = sequential[0] / sequential[1], concurrent[0] / concurrent[1]
        rounds.append(
            {
                "sequential_tokens": sequential[0],
                "sequential_s": round(sequential[1], 3),
                "concurrent_tokens": concurrent[0],
                "concurrent_s": round(concurrent[1], 3),
                "sequential_tok_s": round(sequential_tps, 2),
                "concurrent_tok_s": round(concurrent_tps, 2),
                "ratio": round(concurrent_tps / sequential_tps, 3),
            }
        )
        print(
            f"round {index + 1}: one at a time {sequential_tps:7.1f} tok/s, {num_calls} concurrent "
            f"{concurrent_tps:7.1f} tok/s, ratio {concurrent_tps / sequential_tps:.2f}x"
        )
    await llm.aclose()
    return {"load_s": round(load_s, 2), "warmup_s": round(warmup_s, 2), "rounds": rounds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="3 calls, 1 round, short outputs")
    parser.add_argument("--calls", type=int, default=8, help="concurrent calls (default 8)")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds (default 3)")
    args = parser.parse_args()
    num_calls, num_rounds, max_tokens = (3, 1, 48) if args.smoke else (args.calls, args.rounds, 64)
    measured = asyncio.run(_measure(num_calls, num_rounds, max_tokens))
    rounds = measured["rounds"]
    ratio = statistics.median(r["ratio"] for r in rounds)
    print(f"load {measured['load_s']} s, warm-up call {measured['warmup_s']} s (not counted)")
    print(f"median ratio, {num_calls} concurrent calls vs one at a time: {ratio:.2f}x")
    print(
        json.dumps(
            {
                "benchmark": "concurrency",
                "model": "SmolLM2-135M-Instruct (embedded)",
                "num_calls": num_calls,
                "num_rounds": num_rounds,
                "max_tokens": max_tokens,
                "output": "Person (Pydantic), greedy",
                "median_ratio": round(ratio, 3),
                **measured,
                "smoke": args.smoke,
                "git_revision": _git_revision(),
            }
        )
    )


if __name__ == "__main__":
    main()
