"""The cost of constraints through the SDK: constrained vs free generation of the same length.

For each prompt, a typed-extraction call (`LLM.run`, greedy, Pydantic output) generates N tokens
under the constraint; then the same prompt, unconstrained, generates exactly N tokens through the
same local backend (EOS ignored). One call at a time, identical chat messages (the output's
description is written into the prompt of both). Reported: tokens/s of each, their ratio, and the
share of the constrained calls' time spent in the constraint matcher (`Result.timings.mask_time`:
computing masks and advancing). The warm-up pair (grammar compile, first masks: the cold cost) is
reported separately; rounds alternate which mode goes first and medians are reported.

    python benchmarks/overhead.py            # 6 prompts, 3 rounds
    python benchmarks/overhead.py --smoke    # 2 prompts, 1 round

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
from runtime.engine.sampling_params import SamplingParams
from sdk.backends import BackendRequest
from sdk.outputs import output_spec

PROMPTS = [
    "Extract the record: Ada Lovelace, born in London in 1815, was a mathematician.",
    "Extract the record: Alan Turing, born in London in 1912, was a computer scientist.",
    "Extract the record: Marie Curie, born in Warsaw in 1867, was a physicist.",
    "Extract the record: Nikola Tesla, born in Smiljan in 1856, was an inventor.",
    "Extract the record: Grace Hopper, born in New York in 1906, was a rear admiral.",
    "Extract the record: Carl Sagan, born in Brooklyn in 1934, was an astronomer.",
]
MAX_TOKENS = 96


class Record(BaseModel):
    name: str = Field(max_length=40)
    birth_year: int = Field(ge=1000, le=2100)
    birth_place: str = Field(max_length=40)
    occupation: str = Field(max_length=40)
    is_scientist: bool


def _git_revision() -> str:
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
    return result.stdout.strip() or "uncommitted"


def _messages(prompt: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": output_spec(Record).describe()}, {"role": "user", "content": prompt}]


async def _constrained(llm: sdk.LLM, prompt: str) -> tuple[int, float, float]:
    """(tokens, seconds, seconds in the matcher) of one constrained call."""
    result = await llm.run(_messages(prompt), output=Record, describe_output=False, max_tokens=MAX_TOKENS)
    return result.usage.completion_tokens, result.timings.total, result.timings.mask_time or 0.0


async def _free(llm: sdk.LLM, prompt: str, num_tokens: int) -> tuple[int, float]:
    """(tokens, seconds) of one unconstrained generation of exactly `num_tokens` tokens, through the
    same backend path as `LLM.run` (`ignore_eos`, which `LLM.run` does not expose, keeps the model
    from stopping early, so both modes generate the same number of tokens)."""
    params = SamplingParams(max_tokens=num_tokens, temperature=0.0, ignore_eos=True)
    start = time.perf_counter()
    async for update in llm.backend.stream(BackendRequest(_messages(prompt), params)):
        output = update.output
    return output.usage.completion_tokens, time.perf_counter() - start


async def _round(llm: sdk.LLM, lengths: dict[str, int], constrained_first: bool) -> dict[str, float]:
    """Every prompt once each way; the free run is as long as the prompt's (greedy) constrained run."""
    totals = {"constrained_tokens": 0, "constrained_s": 0.0, "mask_s": 0.0, "free_tokens": 0, "free_s": 0.0}
    for prompt, num_tokens in lengths.items():
        if not constrained_first:
            free_tokens, free_s = await _free(llm, prompt, num_tokens)
        tokens, seconds, mask_s = await _constrained(llm, prompt)
        if constrained_first:
            free_tokens, free_s = await _free(llm, prompt, num_tokens)
        totals["constrained_tokens"] += tokens
        totals["constrained_s"] += seconds
        totals["mask_s"] += mask_s
        totals["free_tokens"] += free_tokens
        totals["free_s"] += free_s
    return totals


async def _measure(prompts: list[str], num_rounds: int) -> dict[str, object]:
    llm = sdk.LLM()
    warmup_start = time.perf_counter()
    tokens, seconds, cold_mask_s = await _constrained(llm, prompts[0])
    await _free(llm, prompts[0], tokens)
    warmup = {"warmup_s": round(time.perf_counter() - warmup_start, 2), "cold_mask_s": round(cold_mask_s, 3)}
    lengths = {prompt: (await _constrained(llm, prompt))[0] for prompt in prompts}  # also warms the masks
    rounds = []
    for index in range(num_rounds):
        totals = await _round(llm, lengths, constrained_first=index % 2 == 0)
        constrained_tps = totals["constrained_tokens"] / totals["constrained_s"]
        free_tps = totals["free_tokens"] / totals["free_s"]
        rounds.append(
            {
                **{key: round(value, 3) for key, value in totals.items()},
                "constrained_tok_s": round(constrained_tps, 2),
                "free_tok_s": round(free_tps, 2),
                "ratio": round(constrained_tps / free_tps, 3),
                "mask_share": round(totals["mask_s"] / totals["constrained_s"], 4),
            }
        )
        print(
            f"round {index + 1}: constrained {constrained_tps:6.1f} tok/s, free {free_tps:6.1f} tok/s, "
            f"ratio {constrained_tps / free_tps:.2f}, mask share {totals['mask_s'] / totals['constrained_s']:.1%}"
        )
    await llm.aclose()
    return {**warmup, "rounds": rounds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="2 prompts, 1 round")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds (default 3)")
    args = parser.parse_args()
    prompts, num_rounds = (PROMPTS[:2], 1) if args.smoke else (PROMPTS, args.rounds)
    measured = asyncio.run(_measure(prompts, num_rounds))
    rounds = measured["rounds"]
    ratio = statistics.median(r["ratio"] for r in rounds)
    mask_share = statistics.median(r["mask_share"] for r in rounds)
    print(f"warm-up pair {measured['warmup_s']} s (cold matcher time {measured['cold_mask_s']} s), not counted")
    print(f"median constrained/free tokens/s: {ratio:.2f}; median mask share of constrained time: {mask_share:.1%}")
    print(
        json.dumps(
            {
                "benchmark": "overhead",
                "model": "SmolLM2-135M-Instruct (embedded)",
                "output": "Record (Pydantic, 5 fields), greedy, one call at a time",
                "num_prompts": len(prompts),
                "num_rounds": num_rounds,
                "median_ratio": round(ratio, 3),
                "median_mask_share": round(mask_share, 4),
                **measured,
                "smoke": args.smoke,
                "git_revision": _git_revision(),
            }
        )
    )


if __name__ == "__main__":
    main()
