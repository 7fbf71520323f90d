"""Real-world schemas (JSONSchemaBench sample, SchemaStore) with labelled instances, ratcheted.

The corpora are large, so CI runs a deterministic sample: every SAMPLE_STRIDE-th schema of each
group in sorted order (the full runs are reported in the README). SchemaStore `$ref`s to
https://json.schemastore.org/X.json resolve to schemas/X.json; a root without `$id` gets its
SchemaStore URL as `$id` (its relative references mean that). Only JSON instances are used.
"""

import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.grammars.json_schema_conformance import Case, ratchet, run_case, summary
from tests.shared_data import SHARED, shared_path

pytestmark = pytest.mark.slow  # the real model or an external corpus

SCHEMAS = SHARED / "corpus" / "schemas"
SCHEMASTORE_URL = "https://json.schemastore.org/"
#: One schema in this many is checked in CI.
SAMPLE_STRIDE = 8


class SchemaStoreResources(Mapping):
    """SchemaStore documents by URL, loaded on first use."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.loaded: dict[str, object] = {}

    def __getitem__(self, uri: str) -> object:
        for prefix in (SCHEMASTORE_URL, "http://json.schemastore.org/"):
            if uri.startswith(prefix):
                path = self.folder / uri[len(prefix) :]
                if path.suffix != ".json":  # the catalog also serves "https://json.schemastore.org/tsconfig"
                    path = path.with_name(path.name + ".json")
                if path.is_file():
                    if uri not in self.loaded:
                        self.loaded[uri] = json.loads(path.read_text())
                    return self.loaded[uri]
        raise KeyError(uri)

    def __iter__(self):
        return iter(self.loaded)

    def __len__(self) -> int:
        return len(self.loaded)


def bench_cases(stride: int):
    for group in sorted(p for p in (SCHEMAS / "jsonschemabench").iterdir() if p.is_dir()):
        for path in sorted(group.glob("*.json"))[::stride]:
            data = json.loads(path.read_text())
            yield (
                f"jsonschemabench/{group.name}",
                Case(path.name, data["schema"], [(t["data"], t["valid"]) for t in data["tests"]]),
            )


def schemastore_cases(stride: int):
    store = SCHEMAS / "schemastore"
    resources = SchemaStoreResources(store / "schemas")
    names = sorted(p.name for p in (store / "tests").iterdir() if (store / "schemas" / f"{p.name}.json").is_file())
    for name in names[::stride]:
        schema = json.loads((store / "schemas" / f"{name}.json").read_text())
        if isinstance(schema, dict) and "$id" not in schema:
            schema = {"$id": f"{SCHEMASTORE_URL}{name}.json", **schema}
        instances = []
        for folder, valid in (("tests", True), ("negative_tests", False)):
            for path in sorted((store / folder / name).glob("*.json")):
                try:
                    instances.append((json.loads(path.read_text()), valid))
                except json.JSONDecodeError:
                    continue  # some SchemaStore samples are JSON with comments
        yield "schemastore", Case(name, schema, instances, resources)


def run(stride: int, problems: list[str] | None = None) -> dict[str, Counter]:
    results: dict[str, Counter] = {}
    for key, case in [*bench_cases(stride), *schemastore_cases(stride)]:
        results.setdefault(key, Counter()).update(run_case(case, problems))
    return results


def test_schema_corpus_sample():
    shared_path("corpus", "schemas")
    results = run(SAMPLE_STRIDE)
    print("\n" + summary(results))
    total = sum(results.values(), Counter())
    assert total["invalid_accepted"] == 0
    assert total["valid_rejected"] <= 0.01 * (total["tests"] or 1)
    assert not (regressions := ratchet(results, "schema_corpus_sample.json")), regressions
