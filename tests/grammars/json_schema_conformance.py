"""Shared machinery of the conformance tests: run labelled instances through compiled schemas and
ratchet the counts against a committed baseline (a regression fails; an improvement warns until the
baseline is updated with STENCIL_UPDATE_BASELINES=1)."""

from __future__ import annotations

import json
import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from grammars.compiler import compile_grammar
from grammars.errors import EmptyLanguageError, GrammarError, UnsupportedSchemaError
from grammars.frontends.json_schema import schema_grammar
from grammars.frontends.json_schema.instances import CanonicalWriter

BASELINES = Path(__file__).resolve().parent / "baselines"
#: Counts that must not go down (per file / group) against the baseline.
RATCHETED = ("compiled", "agree")


@dataclass
class Case:
    """One schema and its labelled instances."""

    name: str
    schema: object
    instances: list[tuple[object, bool]]
    resources: dict = field(default_factory=dict)


def run_case(case: Case, problems: list[str] | None = None) -> Counter:
    """Compile one schema and check every labelled instance; returns the counts (and appends why a
    schema did not compile to `problems`).

    Counted: schemas, compiled, unsupported, errors (other typed errors), tests, agree,
    valid_rejected, invalid_accepted.
    """
    counts = Counter(schemas=1)
    try:
        constraint = compile_grammar(schema_grammar(case.schema, resources=case.resources))
    except UnsupportedSchemaError as exc:
        counts["unsupported"] += 1
        if problems is not None:
            problems.append(f"{case.name}: {exc}")
        return counts
    except EmptyLanguageError:
        constraint = None
    except GrammarError as exc:
        counts["errors"] += 1
        if problems is not None:
            problems.append(f"{case.name}: {type(exc).__name__}: {exc}")
        return counts
    counts["compiled"] += 1
    writer = CanonicalWriter(case.schema, resources=case.resources)
    for instance, valid in case.instances:
        accepted = constraint is not None and constraint.accepts(writer.text(instance))
        counts["tests"] += 1
        if accepted == valid:
            counts["agree"] += 1
        elif valid:
            counts["valid_rejected"] += 1
        else:
            counts["invalid_accepted"] += 1
    return counts


def ratchet(results: dict[str, Counter], baseline_name: str) -> list[str]:
    """Compare per-key counts with the committed baseline; returns the regressions (and warns about
    improvements, or rewrites the baseline when STENCIL_UPDATE_BASELINES=1)."""
    path = BASELINES / baseline_name
    current = {
        key: {k: counts[k] for k in ("schemas", "compiled", "tests", "agree")}
        for key, counts in sorted(results.items())
    }
    if os.environ.get("STENCIL_UPDATE_BASELINES") == "1":
        path.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
        return []
    baseline = json.loads(path.read_text()) if path.exists() else {}
    regressions, improvements = [], []
    for key, counts in current.items():
        before = baseline.get(key)
        if before is None:
            improvements.append(f"{key}: new")
            continue
        for name in RATCHETED:
            if counts[name] < before.get(name, 0):
                regressions.append(f"{key}: {name} {before[name]} -> {counts[name]}")
            elif counts[name] > before.get(name, 0):
                improvements.append(f"{key}: {name} {before[name]} -> {counts[name]}")
    if improvements:
        warnings.warn(
            f"{baseline_name} improved ({'; '.join(improvements[:10])}); update it: "
            "STENCIL_UPDATE_BASELINES=1 pytest tests/grammars/test_json_schema_suite.py tests/grammars/test_schema_corpus.py",
            stacklevel=2,
        )
    return regressions


def summary(results: dict[str, Counter]) -> str:
    """A per-key table and the totals, for the test log."""
    lines = [
        f"{'':42} {'schemas':>7} {'compiled':>8} {'unsup':>5} {'errors':>6} {'tests':>5} {'agree':>5} {'v-rej':>5} {'i-acc':>5}"
    ]
    total: Counter = Counter()
    for key, c in sorted(results.items()):
        total.update(c)
        lines.append(
            f"{key:42} {c['schemas']:7} {c['compiled']:8} {c['unsupported']:5} {c['errors']:6} {c['tests']:5} "
            f"{c['agree']:5} {c['valid_rejected']:5} {c['invalid_accepted']:5}"
        )
    lines.append(
        f"{'TOTAL':42} {total['schemas']:7} {total['compiled']:8} {total['unsupported']:5} {total['errors']:6} "
        f"{total['tests']:5} {total['agree']:5} {total['valid_rejected']:5} {total['invalid_accepted']:5}"
    )
    return "\n".join(lines)
