"""The schema trial: real JSON Schemas through `sdk.LLM`, as a new user would call it (issue 10).

Schemas are sampled deterministically (fixed seed) across the JSONSchemaBench groups and SchemaStore
in `../shared/corpus/schemas`, round-robin over the groups; schemas Stencil refuses to compile are
skipped and counted by reason. Each schema gets one greedy call on the embedded model with
`output=sdk.Schema(schema)` and `max_tokens` (default 400). The prompt is a generic instruction
built from the schema's shortest labelled valid instance ("Extract a JSON value with these facts:"
and its leaf values as `path: value` lines); a schema without one gets a plain request for a valid
value. Each output is checked by `jsonschema` (the schema's `$schema`, default 2020-12, formats
asserted) as an oracle independent of Stencil.

Every schema is called twice in the same run, with the runaway guard on (the default) and off
(`runaway_guard=False`; see runtime.engine.runaway). Printed: a line per schema and setting; per
setting the share of calls that return a valid typed value, invalid outputs (must be 0),
`IncompleteOutputError`s, mean completion tokens and field accuracy (the mean, over the schemas
with an instance, of the share of the instance's stated leaf fields that the output reproduces
exactly at the same path); the guard's ratios to the unguarded run; then one JSON line with the
configuration and git revision. The engine has no switch for its length-aware masks, so there is
no "before" run of them here (the issue quotes 31% valid for the build without them).

    .venv/bin/python benchmarks/schema_trial.py              # 30 schemas, max_tokens 400
    .venv/bin/python benchmarks/schema_trial.py --smoke      # 2 schemas, max_tokens 48
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import referencing
import referencing.exceptions
from referencing.jsonschema import DRAFT202012

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import grammars  # noqa: E402
import sdk  # noqa: E402
from grammars.frontends.json_schema import schema_grammar  # noqa: E402
from tests.grammars.test_schema_corpus import bench_cases, schemastore_cases  # noqa: E402

SEED = 10
#: Most `path: value` lines a prompt states (longer instances are cut; accuracy counts what is stated).
MAX_FACTS = 40
INSTRUCTION = "Extract a JSON value with these facts:"
NO_INSTANCE_PROMPT = "Write a realistic JSON value."


@dataclass
class Trial:
    """One sampled schema, ready to call."""

    group: str
    name: str
    schema: Any
    resources: dict[str, Any]
    facts: dict[str, Any] | None  # leaf path -> value of the reference instance; None: no instance
    num_facts_cut: int


@dataclass
class Outcome:
    """What one call gave: `kind` is "valid", "invalid", "incomplete" or a typed error's name."""

    kind: str
    completion_tokens: int | None
    num_facts_matched: int


def _git_revision() -> str:
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return result.stdout.strip() or "uncommitted"


def _leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(path, value) of every scalar (and empty container) in a JSON value, `a.b[0]` style."""
    if isinstance(value, dict) and value:
        for key, item in value.items():
            yield from _leaves(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list) and value:
        for index, item in enumerate(value):
            yield from _leaves(item, f"{path}[{index}]")
    else:
        yield path or "value", value


def _prompt(facts: dict[str, Any] | None) -> str:
    if facts is None:
        return NO_INSTANCE_PROMPT
    lines = [f"{path}: {value if isinstance(value, str) else json.dumps(value)}" for path, value in facts.items()]
    return "\n".join([INSTRUCTION, *lines])


def _refusal(schema: Any, resources: Mapping[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """(why Stencil refuses the schema or None, the SchemaStore documents its `$ref`s use).

    The front end reads `resources` lazily, so compiling it once collects the documents the SDK needs.
    """
    try:
        schema_grammar(schema, resources=resources)
        documents = {uri: resources[uri] for uri in resources}
        grammars.compile(grammars.Schema(schema, resources=documents or None))
    except grammars.UnsupportedSchemaError as exc:
        return f"UnsupportedSchemaError({exc.keyword})", {}
    except grammars.GrammarError as exc:
        return type(exc).__name__, {}
    return None, documents


def _candidates() -> dict[str, list[Any]]:
    """The corpus by group, each group shuffled with the fixed seed."""
    groups: dict[str, list[Any]] = {}
    for group, case in [*bench_cases(1), *schemastore_cases(1)]:
        groups.setdefault(group, []).append(case)
    rng = random.Random(SEED)
    for cases in groups.values():
        rng.shuffle(cases)
    return dict(sorted(groups.items()))


def _sample(num_schemas: int, skipped: Counter[str]) -> list[Trial]:
    """`num_schemas` compilable schemas, round-robin over the shuffled groups."""
    queues = {group: iter(cases) for group, cases in _candidates().items()}
    trials: list[Trial] = []
    while len(trials) < num_schemas and queues:
        for group, queue in list(queues.items()):
            case = next(queue, None)
            if case is None:
                del queues[group]
                continue
            reason, documents = _refusal(case.schema, case.resources)
            if reason is not None:
                skipped[reason] += 1
                continue
            trials.append(_trial(group, case, documents))
            if len(trials) == num_schemas:
                break
    return trials


def _trial(group: str, case: Any, resources: dict[str, Any]) -> Trial:
    """A trial of a corpus case, its facts from its shortest valid instance (if it has one)."""
    valid = [instance for instance, is_valid in case.instances if is_valid]
    if not valid:
        return Trial(group, case.name, case.schema, resources, None, 0)
    leaves = list(_leaves(min(valid, key=lambda instance: len(json.dumps(instance)))))
    return Trial(group, case.name, case.schema, resources, dict(leaves[:MAX_FACTS]), max(0, len(leaves) - MAX_FACTS))


def _oracle(schema: Any, resources: Mapping[str, Any]) -> Any:
    """A `jsonschema` validator of `schema` (its draft, formats asserted), remote `$ref`s from `resources`."""

    def retrieve(uri: str) -> referencing.Resource[Any]:
        if uri not in resources:
            raise referencing.exceptions.NoSuchResource(uri)
        return referencing.Resource.from_contents(resources[uri], default_specification=DRAFT202012)

    validator_class = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    # `retrieve` is the public alias of the attrs field `_retrieve`, which mypy does not see.
    registry: referencing.Registry[Any] = referencing.Registry(retrieve=retrieve)  # type: ignore[call-arg]
    return validator_class(schema, registry=registry, format_checker=validator_class.FORMAT_CHECKER)


def _judge(trial: Trial, text: str) -> tuple[str, int]:
    """("valid" or "invalid", facts reproduced) of an output text, by the oracle."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return "invalid", 0
    is_valid = _oracle(trial.schema, trial.resources).is_valid(value)
    output = dict(_leaves(value))
    matched = sum(
        1
        for path, fact in (trial.facts or {}).items()
        if path in output and output[path] == fact and type(output[path]) is type(fact)
    )
    return ("valid" if is_valid else "invalid"), matched


async def _call(llm: sdk.LLM, trial: Trial, max_tokens: int, runaway_guard: bool) -> Outcome:
    output = sdk.Schema(trial.schema, resources=trial.resources or None)
    try:
        result = await llm.run(_prompt(trial.facts), output=output, max_tokens=max_tokens, runaway_guard=runaway_guard)
    except sdk.IncompleteOutputError as exc:
        return Outcome("incomplete", exc.usage.completion_tokens, 0)
    except sdk.ValidationError as exc:  # the SDK's own check said no: the oracle has the last word
        kind, matched = _judge(trial, exc.text)
        kind = "invalid" if kind == "invalid" else "ValidationError(oracle: valid)"
        return Outcome(kind, exc.usage.completion_tokens, matched)
    except sdk.GenerationError as exc:
        return Outcome(type(exc).__name__, exc.usage.completion_tokens, 0)
    except sdk.StencilError as exc:
        return Outcome(type(exc).__name__, None, 0)
    kind, matched = _judge(trial, result.text)
    return Outcome(kind, result.usage.completion_tokens, matched)


async def _run(trials: list[Trial], max_tokens: int) -> tuple[dict[bool, list[Outcome]], float]:
    """Per runaway-guard setting (on, off), the outcomes of one call per trial; and the seconds
    loading the model took."""
    start = time.perf_counter()
    llm = sdk.LLM()
    load_seconds = time.perf_counter() - start
    outcomes: dict[bool, list[Outcome]] = {True: [], False: []}
    for index, trial in enumerate(trials, 1):
        for guard, guard_outcomes in outcomes.items():
            outcome = await _call(llm, trial, max_tokens, guard)
            guard_outcomes.append(outcome)
            fields = "no instance" if trial.facts is None else f"fields {outcome.num_facts_matched}/{len(trial.facts)}"
            print(
                f"{index:3d} {trial.group}/{trial.name} guard {'on ' if guard else 'off'}: {outcome.kind}, "
                f"{outcome.completion_tokens} tokens, {fields}",
                flush=True,
            )
    await llm.aclose()
    return outcomes, load_seconds


def _summary(trials: list[Trial], outcomes: list[Outcome]) -> dict[str, Any]:
    """The figures of one setting's calls (see the module docstring)."""
    kinds = Counter(outcome.kind for outcome in outcomes)
    tokens = [outcome.completion_tokens for outcome in outcomes if outcome.completion_tokens is not None]
    with_facts = [(trial, outcome) for trial, outcome in zip(trials, outcomes) if trial.facts]
    accuracy = statistics.fmean(o.num_facts_matched / len(t.facts or ()) for t, o in with_facts) if with_facts else 0.0
    num_stated = sum(len(trial.facts or ()) for trial, _ in with_facts)
    return {
        "outcomes": dict(kinds),
        "num_valid": kinds["valid"],
        "valid_rate": round(kinds["valid"] / len(outcomes), 4) if outcomes else 0.0,
        "num_invalid": kinds["invalid"],
        "num_incomplete": kinds["incomplete"],
        "mean_completion_tokens": round(statistics.fmean(tokens), 1) if tokens else 0.0,
        "num_with_facts": len(with_facts),
        "num_stated_facts": num_stated,
        "field_accuracy": round(accuracy, 4),
        "pooled_field_accuracy": round(sum(o.num_facts_matched for _, o in with_facts) / num_stated, 4)
        if num_stated
        else 0.0,
    }


def _ratio(on: float, off: float) -> str:
    return f"{on / off:.2f}x" if off else "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="2 schemas, max_tokens 48")
    parser.add_argument("--num-schemas", type=int, default=30, help="schemas to call (default 30)")
    parser.add_argument("--max-tokens", type=int, default=400, help="max_tokens of each call (default 400)")
    args = parser.parse_args()
    num_schemas, max_tokens = (2, 48) if args.smoke else (args.num_schemas, args.max_tokens)
    skipped: Counter[str] = Counter()
    trials = _sample(num_schemas, skipped)
    outcomes, load_seconds = asyncio.run(_run(trials, max_tokens))
    summaries = {guard: _summary(trials, guard_outcomes) for guard, guard_outcomes in outcomes.items()}
    print(f"model load {load_seconds:.1f} s, not counted; skipped {sum(skipped.values())} schemas: {dict(skipped)}")
    for guard, summary in summaries.items():
        print(
            f"runaway guard {'on ' if guard else 'off'}: valid typed values {summary['num_valid']}/{len(trials)} = "
            f"{summary['valid_rate']:.1%}; invalid: {summary['num_invalid']}; IncompleteOutputError: "
            f"{summary['num_incomplete']}; mean completion tokens: {summary['mean_completion_tokens']:.1f}; "
            f"field accuracy over {summary['num_with_facts']} schemas with an instance: "
            f"{summary['field_accuracy']:.1%} per schema, {summary['pooled_field_accuracy']:.1%} of all "
            f"{summary['num_stated_facts']} stated fields"
        )
    on, off = summaries[True], summaries[False]
    print(
        f"guard on / off: valid {_ratio(on['valid_rate'], off['valid_rate'])}, field accuracy "
        f"{_ratio(on['field_accuracy'], off['field_accuracy'])}, completion tokens "
        f"{_ratio(on['mean_completion_tokens'], off['mean_completion_tokens'])}"
    )
    print(
        json.dumps(
            {
                "benchmark": "schema_trial",
                "model": "SmolLM2-135M-Instruct (embedded)",
                "decoding": "greedy, one call at a time, output=sdk.Schema(schema), runaway guard on and off",
                "seed": SEED,
                "num_schemas": len(trials),
                "max_tokens": max_tokens,
                "max_facts": MAX_FACTS,
                "schemas": [f"{trial.group}/{trial.name}" for trial in trials],
                "skipped": dict(skipped),
                "guard_on": on,
                "guard_off": off,
                "num_facts_cut": sum(trial.num_facts_cut for trial in trials),
                "load_s": round(load_seconds, 1),
                "smoke": args.smoke,
                "git_revision": _git_revision(),
            }
        )
    )


if __name__ == "__main__":
    main()
