"""Speculative decoding and jump-forward: output tokens/s with and without each fast path, same run.

Two workloads on the embedded SmolLM2-135M, greedy:

- copy-heavy extraction: a ~500-token document and a Pydantic model whose fields are spans of it;
- ordinary JSON: short typed answers (a person, a product review).

For each: plain constrained decoding, jump-forward only, prompt lookup only, both, self-speculation
(the model's own first n layers draft, n in `--self-draft`); and free generation of the same number
of tokens (`ignore_eos`), the bar constrained decoding should clear. A third workload, free prose,
compares plain decoding with prompt lookup and self-speculation, one stream at a time; a fourth,
eight prose streams decoded as one batch, compares plain decoding with prompt lookup. Paths run interleaved, `--repeats`
rounds, median reported; each prints tokens/s, its ratio to plain, the draft acceptance rate, and
whether its outputs equal the plain ones token for token (bfloat16: a verify pass may round a
near-tie differently). Ends with one JSON line. `--smoke` runs one short prompt, one round;
`--workloads` picks some; on a shared machine `--threads 1 --clock cpu` steadies the ratios;
`--explain` tells, per path with drafts, which kinds of draft tokens were accepted, the rows of its
steps and its time outside the forward pass.

    .venv/bin/python benchmarks/speculative.py
    .venv/bin/python benchmarks/speculative.py --self-draft "" --workloads copy-heavy,json --threads 1 --clock cpu --explain
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import subprocess
import time

import torch
from pydantic import BaseModel

import grammars
import runtime
from runtime.engine.llm_engine import Engine
from runtime.engine.sampling_params import SamplingParams
from runtime.engine.speculative import SpeculativeConfig
from runtime.model.runner import ModelRunner

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

#: Another report for the same schema, extracted once before the measured runs: an engine serving an
#: extraction pipeline has answered the schema before, and what it learns across requests (acceptance
#: rates, the tokens that end copies) must not come from the measured document's own answer.
EARLIER_DOCUMENT = """INCIDENT REPORT 2024-093

Filed by: Tomasz Kowalczyk, Operations Lead, Baltic Freight Services
Date of incident: Friday, 8 March 2024
Location: Gdansk container terminal, crane 3

Summary: At 14:10 local time the crane's load sensor reported a weight of zero while a container was
still attached, and the crane refused to lower it. The container hung above the quay for twenty-five
minutes until the crane operator, Agnieszka Nowak, lowered it by hand with the emergency controls. No
one was hurt, and three vessels sailed two hours late.

Root cause: a sensor driver (version 2.7.0) released that week divided by a calibration constant that
a configuration file set to zero. The review step that compares new configuration files with the old
ones was bypassed by a flag, force_apply, that an engineer had used during an urgent fix in January.

Actions taken: the driver was rolled back to version 2.6.4 at 15:02, the force_apply flag was removed,
and a check now refuses any calibration constant of zero. An audit of every crane's configuration is
planned for 22 March 2024 and will be run by Lukas Brandt from the automation group.

Customer impact: four shipping lines were delayed; the largest of them, Nordic Reefer Lines, asked for
a written report, which was sent the next morning.

Lessons: configuration files need the same review as code; emergency flags must be removed once the
emergency is over.
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

#: Answered before the measured JSON prompts (same schemas, other prompts: see `EARLIER_DOCUMENT`).
WARM_UP_JSON_PROMPTS = [
    ("Alan Turing, 41, mathematician and codebreaker. Give him as JSON.", Person),
    ("Review: the Moka pot makes strong coffee, 3 of 5: cheap, sturdy; but slow and hard to clean.", Review),
]

PROSE_PROMPTS = [
    "Write a short paragraph about the history of the bicycle.",
    "Explain in a few sentences why the sky is blue.",
    "Describe a quiet morning in a small fishing village.",
]

#: Eight free-text streams decoded as one batch: where verify rows compete for compute.
BATCH_PROMPTS = [
    f"Write a long essay about {topic}."
    for topic in (
        "the history of the bicycle",
        "how bread is made",
        "the life of bees",
        "a trip to Lisbon",
        "how computers store numbers",
        "the rules of chess",
        "why the sky is blue",
        "the water cycle",
    )
]

#: Fast paths of the constrained workloads; self-speculation runs on every workload at each --self-draft depth.
PATHS = {
    "plain": None,
    "jump_forward": SpeculativeConfig(prompt_lookup=False),
    "prompt_lookup": SpeculativeConfig(jump_forward=False),
    "both": SpeculativeConfig(),
}


#: The workloads, in the order they run (`--workloads` picks some).
WORKLOADS = ("copy-heavy", "json", "prose", "prose-batch")


def self_draft_paths(depths: list[int]) -> dict[str, SpeculativeConfig]:
    """Self-speculation alone (the model's first n layers draft), at each depth."""
    return {
        f"self_draft_{n}": SpeculativeConfig(jump_forward=False, prompt_lookup=False, self_draft_layers=n)
        for n in depths
    }


#: The clock `run` reads (`--clock`): wall time, or the process's CPU time (steadier on a shared machine).
CLOCK = [time.perf_counter]


def run(
    engine: Engine, prompts: list[str], constraints: list, params: list[SamplingParams], *, batched: bool = False
) -> tuple[list, float]:
    """Outputs one prompt at a time (single-stream latency), or all as one batch, and the seconds they took."""
    started = CLOCK[0]()
    if batched:
        outputs = engine.generate(prompts, params, constraints=constraints)
    else:
        outputs = [engine.generate([p], q, constraints=[c])[0] for p, c, q in zip(prompts, constraints, params)]
    return outputs, CLOCK[0]() - started


class Explainer:
    """Wraps an engine's verification and forward pass to tell where a fast path's time and drafts
    go (`--explain`): per draft kind, tokens verification reached and accepted (a rejected forced
    token: the model spelled the forced text in other pieces; a rejected looked-up one: the answer
    is not the copy), steps and their rows, and the time outside the forward pass."""

    def __init__(self, engine: Engine) -> None:
        speculator, runner = engine.speculator, engine.runner
        assert speculator is not None
        self.reached: collections.Counter[str] = collections.Counter()
        self.accepted: collections.Counter[str] = collections.Counter()
        self.rows: collections.Counter[int] = collections.Counter()
        self.forward_seconds = 0.0
        verify, forward = speculator.verify, runner.forward

        def explained_verify(logits, seq, params, draft):
            token_ids, processed = verify(logits, seq, params, draft)
            num_accepted = len(token_ids) - 1
            for index, kind in enumerate(draft.kinds[: num_accepted + 1]):
                self.reached[kind] += 1
                self.accepted[kind] += index < num_accepted
            return token_ids, processed

        def timed_forward(batch):
            started = CLOCK[0]()
            logits = forward(batch)
            self.forward_seconds += CLOCK[0]() - started
            if not batch.is_prefill:
                self.rows[sum(map(len, batch.token_ids))] += 1
            return logits

        speculator.verify = explained_verify  # type: ignore[method-assign]
        runner.forward = timed_forward  # type: ignore[method-assign]

    def report(self, name: str, path: str, seconds: float, num_tokens: int) -> None:
        """Print what was counted over `seconds` of runs that produced `num_tokens` tokens."""
        steps = sum(self.rows.values())
        kinds = ", ".join(f"{kind} {self.accepted[kind]}/{self.reached[kind]}" for kind in sorted(self.reached))
        print(f"[{name}] {path}: accepted/reached by kind: {kinds}")
        print(
            f"[{name}] {path}: {num_tokens / max(steps, 1):.2f} tokens per decode step, rows per step"
            f" {dict(sorted(self.rows.items()))}, outside the forward pass {1 - self.forward_seconds / seconds:.1%}"
        )


def measure(
    name: str,
    engines: dict[str, Engine],
    prompts: list[str],
    specs: list,
    max_tokens: int,
    repeats: int,
    *,
    batched: bool = False,
    explain: bool = False,
    warm_up: tuple[list[str], list] | None = None,
) -> dict:
    """Tokens/s of each path (median of `repeats` interleaved rounds), its ratio to plain decoding, the
    draft acceptance rate, and whether its outputs equal plain ones; plus free generation of the same
    lengths when the workload is constrained. `batched`: all prompts decode as one batch; `explain`:
    print where the drafts and time of the paths with drafts go (`Explainer`), over all rounds;
    `warm_up`: (prompts, specs) each engine answers first (other prompts than the measured ones, for
    the same schemas), then it only reads the measured prompts (prefix cache); None: it answers the
    first measured prompt."""
    constraints = [None if spec is None else grammars.compile(spec) for spec in specs]
    greedy = [SamplingParams(temperature=0.0, max_tokens=max_tokens)] * len(prompts)
    for engine in engines.values():
        if warm_up is None:
            run(engine, prompts[:1], constraints[:1], greedy[:1])  # masks, prefix cache
            continue
        warm_prompts, warm_specs = warm_up
        warm_constraints = [None if spec is None else grammars.compile(spec) for spec in warm_specs]
        run(engine, warm_prompts, warm_constraints, greedy[:1] * len(warm_prompts))  # masks, answered schemas
        run(engine, prompts, constraints, [SamplingParams(temperature=0.0, max_tokens=1)] * len(prompts))
    reference, _ = run(engines["plain"], prompts, constraints, greedy, batched=batched)
    reference_ids = [o.outputs[0].token_ids for o in reference]
    num_tokens = sum(map(len, reference_ids))
    print(f"[{name}] sample output: {reference[0].outputs[0].text[:160]!r}")
    free = [SamplingParams(temperature=0.0, max_tokens=len(ids), ignore_eos=True) for ids in reference_ids]
    paths = dict(engines)
    if any(c is not None for c in constraints):
        paths["free"] = engines["plain"]
    seconds: dict[str, list[float]] = {path: [] for path in paths}
    stats: dict[str, dict] = {}
    explainers = {
        path: Explainer(engine)
        for path, engine in paths.items()
        if explain and path != "free" and engine.speculator is not None
    }
    num_produced: collections.Counter[str] = collections.Counter()
    for _ in range(repeats):
        for path, engine in paths.items():
            if path == "free":
                outputs, elapsed = run(engine, prompts, [None] * len(prompts), free, batched=batched)
            else:
                outputs, elapsed = run(engine, prompts, constraints, greedy, batched=batched)
                drafted = sum(o.usage.draft_tokens for o in outputs)
                accepted = sum(o.usage.accepted_draft_tokens for o in outputs)
                stats[path] = {
                    "identical": [o.outputs[0].token_ids for o in outputs] == reference_ids,
                    "acceptance": accepted / drafted if drafted else None,
                    "num_tokens": sum(len(o.outputs[0].token_ids) for o in outputs),
                }
                num_produced[path] += stats[path]["num_tokens"]
            seconds[path].append(elapsed)
    results: dict[str, dict] = {}
    plain_rate = None
    for path in paths:
        rate = (stats.get(path, {}).get("num_tokens") or num_tokens) / statistics.median(seconds[path])
        plain_rate = rate if path == "plain" else plain_rate
        assert plain_rate is not None
        results[path] = {"tokens_per_s": round(rate, 1), "vs_plain": round(rate / plain_rate, 3), **stats.get(path, {})}
        acceptance = results[path].get("acceptance")
        extra = "" if acceptance is None else f" acceptance={acceptance:.2f}"
        identical = results[path].get("identical", True)
        print(f"[{name}] {path:14s} {rate:7.1f} tok/s  {rate / plain_rate:5.2f}x plain  identical={identical}{extra}")
    for path, explainer in explainers.items():
        explainer.report(name, path, sum(seconds[path]), num_produced[path])
    if "free" in results:
        for path in paths:
            if path != "free":
                print(
                    f"[{name}] {path} / free = {results[path]['tokens_per_s'] / results['free']['tokens_per_s']:.2f}x"
                )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="one short prompt per workload, one round")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the median is reported")
    parser.add_argument("--self-draft", default="4,8,12", help="comma-separated self-speculation depths ('' for none)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall", help="what tokens/s is measured in")
    parser.add_argument(
        "--explain", action="store_true", help="per draft kind acceptance, rows per step, time outside the forward"
    )
    parser.add_argument(
        "--workloads", default=",".join(WORKLOADS), help=f"comma-separated subset of {', '.join(WORKLOADS)}"
    )
    args = parser.parse_args()
    repeats = 1 if args.smoke else args.repeats
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    CLOCK[0] = time.process_time if args.clock == "cpu" else time.perf_counter
    workloads = [name for name in args.workloads.split(",") if name]
    unknown = sorted(set(workloads) - set(WORKLOADS))
    if unknown:
        parser.error(f"unknown workloads {unknown}; choose from {', '.join(WORKLOADS)}")
    depths = [int(n) for n in args.self_draft.split(",") if n]
    base = runtime.load(max_model_len=2048, kv_cache_bytes=64 * 2**20)
    model, tokenizer, num_blocks = base.runner.model, base.tokenizer, base.runner.num_blocks

    def engine(config: SpeculativeConfig | None) -> Engine:
        """An engine over the one loaded model (weights shared), with a KV pool of its own."""
        runner = ModelRunner(model, num_blocks=num_blocks, block_size=base.runner.block_size)
        return Engine(runner, tokenizer, max_model_len=2048, speculative=config)

    engines = {path: engine(config) for path, config in PATHS.items()}
    self_engines = {path: engine(config) for path, config in self_draft_paths(depths).items()}
    results: dict[str, dict] = {}
    if "copy-heavy" in workloads:
        instruction = "Extract the incident's details as JSON, copying spans from the report.\n\n"
        results["copy_heavy"] = measure(
            "copy-heavy",
            {**engines, **self_engines},
            [instruction + DOCUMENT],
            [Incident],
            64 if args.smoke else 400,
            repeats,
            explain=args.explain,
            warm_up=([instruction + EARLIER_DOCUMENT], [Incident]),
        )
    if "json" in workloads:
        prompts = [p for p, _ in JSON_PROMPTS][: 1 if args.smoke else None]
        specs = [s for _, s in JSON_PROMPTS][: len(prompts)]
        results["json"] = measure(
            "json",
            {**engines, **self_engines},
            prompts,
            specs,
            48 if args.smoke else 160,
            repeats,
            explain=args.explain,
            warm_up=([p for p, _ in WARM_UP_JSON_PROMPTS], [s for _, s in WARM_UP_JSON_PROMPTS]),
        )
    if "prose" in workloads:
        prose_prompts = PROSE_PROMPTS[: 1 if args.smoke else None]
        prose_engines = {"plain": engines["plain"], "prompt_lookup": engines["prompt_lookup"], **self_engines}
        results["prose"] = measure(
            "prose", prose_engines, prose_prompts, [None] * len(prose_prompts), 48 if args.smoke else 128, repeats
        )
    if "prose-batch" in workloads:
        batch_prompts = BATCH_PROMPTS[: 2 if args.smoke else None]
        results["prose_batch"] = measure(
            "prose-batch",
            {"plain": engines["plain"], "prompt_lookup": engines["prompt_lookup"]},
            batch_prompts,
            [None] * len(batch_prompts),
            48 if args.smoke else 128,
            repeats,
            batched=True,
        )
    revision = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(
        json.dumps(
            {
                "benchmark": "speculative",
                "revision": revision,
                "smoke": args.smoke,
                "repeats": repeats,
                "threads": torch.get_num_threads(),
                "clock": args.clock,
                "self_draft_depths": depths,
                **results,
            }
        )
    )


if __name__ == "__main__":
    main()
