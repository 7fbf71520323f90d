"""Speculative decoding and jump-forward: output tokens/s with and without each fast path, same run.

Two workloads on the embedded SmolLM2-135M, greedy:

- copy-heavy extraction: a ~500-token document and a Pydantic model whose fields are spans of it;
- ordinary JSON: short typed answers (a person, a product review).

For each: plain constrained decoding, jump-forward only, prompt lookup only, both; and free
generation of the same number of tokens (`ignore_eos`), the bar constrained decoding should clear.
Outputs with the fast paths must equal the plain ones token for token. Prints tokens/s, the ratios
and one JSON line. `--smoke` runs one short prompt.

    .venv/bin/python benchmarks/speculative.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time

from pydantic import BaseModel

import grammars
import runtime
from runtime.engine.llm_engine import Engine
from runtime.engine.sampling_params import SamplingParams
from runtime.engine.speculative import SpeculativeConfig

DOCUMENT = """INCIDENT REPORT 2024-117

Filed by: Margaret Okonkwo, Senior Reliability Engineer, Northwind Logistics
Date of incident: Tuesday, 14 May 2024
Location: Rotterdam distribution centre, loading bay 7

Summary: At 06:42 local time the conveyor controller in loading bay 7 stopped responding after a
firmware update that had been scheduled for the maintenance window the night before. Parcels backed
up onto the sorting floor for forty minutes until the shift supervisor, Daniel Verhoeven, switched
the line to manual operation. No one was injured, but 1,284 parcels missed the morning trucks to
Antwerp and Utrecht and were delivered one day late.

Root cause: the firmware image (version 4.2.1) had been built against the wrong hardware revision of
the controller board. The checksum verification step in the deployment pipeline was skipped because a
configuration flag, skip_verify, had been left enabled after a test run in March. The controller
accepted the image, rebooted, and then failed its watchdog check every ninety seconds.

Actions taken: the team rolled the controller back to firmware version 4.1.9 at 07:55, removed the
skip_verify flag from every deployment profile, and added an alarm that pages the on-call engineer
when a controller misses two consecutive watchdog checks. A second review of all deployment profiles
is scheduled for 28 May 2024 and will be led by Priya Raman from the platform team.

Customer impact: eleven business customers received late deliveries; the largest of them, Van Dijk
Medical Supplies, was offered a credit of 2,500 euros. The customer service team contacted every
affected customer by email before noon on the day of the incident.

Lessons: deployment safety checks must fail closed; configuration flags used for tests must expire
automatically; manual fallback procedures worked well and should be rehearsed every quarter.
"""


class Incident(BaseModel):
    report_id: str
    filed_by: str
    date: str
    location: str
    shift_supervisor: str
    bad_firmware_version: str
    rollback_firmware_version: str
    flag_name: str
    review_lead: str
    largest_customer: str
    summary: str
    root_cause: str


class Person(BaseModel):
    name: str
    age: int
    occupation: str


class Review(BaseModel):
    product: str
    rating: int
    pros: list[str]
    cons: list[str]


JSON_PROMPTS = [
    ("Ada Lovelace, 36, mathematician. Give her as JSON.", Person),
    ("Grace Hopper was 85 and a computer scientist. As JSON.", Person),
    ("Review: the Aeropress coffee maker is great, 4 of 5: fast, cheap; but small and plasticky.", Review),
]

PATHS = {
    "plain": None,
    "jump_forward": SpeculativeConfig(prompt_lookup=False),
    "prompt_lookup": SpeculativeConfig(jump_forward=False),
    "both": SpeculativeConfig(),
}


def run(engine: Engine, prompts: list[str], constraints: list, params: SamplingParams) -> tuple[list, float, int]:
    """Outputs one prompt at a time (single-stream latency), seconds, completion tokens."""
    started = time.perf_counter()
    outputs = [engine.generate([p], params, constraints=[c])[0] for p, c in zip(prompts, constraints)]
    seconds = time.perf_counter() - started
    return outputs, seconds, sum(len(o.outputs[0].token_ids) for o in outputs)


def measure(name: str, engines: dict[str, Engine], prompts: list[str], specs: list, max_tokens: int) -> dict:
    constraints = [grammars.compile(spec) for spec in specs]
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    results: dict[str, float] = {}
    reference = None
    for path, engine in engines.items():
        run(engine, prompts[:1], constraints[:1], params)  # warm-up: masks, prefix cache
        outputs, seconds, num_tokens = run(engine, prompts, constraints, params)
        token_ids = [o.outputs[0].token_ids for o in outputs]
        if reference is None:
            reference = token_ids
            print(f"[{name}] sample output: {outputs[0].outputs[0].text[:160]!r}")
        identical = token_ids == reference
        results[path] = num_tokens / seconds
        print(f"[{name}] {path:14s} {num_tokens / seconds:7.1f} tok/s ({num_tokens} tokens) identical={identical}")
    free_engine = engines["plain"]
    assert reference is not None
    free_params = [SamplingParams(temperature=0.0, max_tokens=len(ids), ignore_eos=True) for ids in reference]
    run(free_engine, prompts[:1], [None], free_params[0])
    started = time.perf_counter()
    for prompt, p in zip(prompts, free_params):
        free_engine.generate([prompt], p)
    results["free"] = sum(map(len, reference)) / (time.perf_counter() - started)
    print(f"[{name}] {'free':14s} {results['free']:7.1f} tok/s (same lengths, unconstrained)")
    for path in ("jump_forward", "prompt_lookup", "both"):
        print(
            f"[{name}] {path} / plain = {results[path] / results['plain']:.2f}x; "
            f"/ free = {results[path] / results['free']:.2f}x"
        )
    print(f"[{name}] plain / free = {results['plain'] / results['free']:.2f}x")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="one short prompt per workload")
    args = parser.parse_args()
    engines = {path: runtime.load(speculative=config, max_model_len=2048) for path, config in PATHS.items()}
    extraction = f"Extract the incident's details as JSON, copying spans from the report.\n\n{DOCUMENT}"
    copy_heavy = measure("copy-heavy", engines, [extraction], [Incident], 64 if args.smoke else 400)
    prompts = [p for p, _ in JSON_PROMPTS][: 1 if args.smoke else None]
    specs = [s for _, s in JSON_PROMPTS][: len(prompts)]
    ordinary = measure("json", engines, prompts, specs, 48 if args.smoke else 160)
    revision = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(
        json.dumps(
            {
                "benchmark": "speculative",
                "revision": revision,
                "smoke": args.smoke,
                "copy_heavy": copy_heavy,
                "json": ordinary,
            }
        )
    )


if __name__ == "__main__":
    main()
