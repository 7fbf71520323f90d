"""JSON-Schema-Test-Suite conformance (draft 2020-12 and draft 7, main folders), ratcheted.

Each group either compiles and accepts exactly the valid instances (in canonical text: keys in the
schema's declared order, numbers in plain decimal, json.dumps separators), or raises
UnsupportedSchemaError. Draft 7 schemas carry no `$schema`, so the test adds the draft-07 one.
`format.json` treats `format` as an annotation; Stencil asserts formats, so there the string
instances the suite describes as "invalid ..." are expected to be rejected.
"""

import json
from collections import Counter

import pytest

from tests.grammars.json_schema_conformance import Case, ratchet, run_case, summary
from tests.shared_data import SHARED, shared_path

pytestmark = pytest.mark.slow  # the real model or an external corpus

SUITE = SHARED / "corpus" / "json-schema-test-suite"
DRAFT_URIS = {"draft2020-12": None, "draft7": "http://json-schema.org/draft-07/schema#"}


def _remotes() -> dict:
    remotes = {}
    for path in sorted((SUITE / "remotes").rglob("*.json")):
        remotes["http://localhost:1234/" + path.relative_to(SUITE / "remotes").as_posix()] = json.loads(
            path.read_text()
        )
    return remotes


def _cases(draft: str, remotes: dict):
    for path in sorted((SUITE / draft).glob("*.json")):
        for group in json.loads(path.read_text()):
            schema = group["schema"]
            if DRAFT_URIS[draft] and isinstance(schema, dict) and "$schema" not in schema:
                schema = {"$schema": DRAFT_URIS[draft], **schema}
            instances = []
            for test in group["tests"]:
                valid = test["valid"]
                if path.name == "format.json" and isinstance(test["data"], str) and "invalid" in test["description"]:
                    valid = False
                instances.append((test["data"], valid))
            yield f"{draft}/{path.name}", Case(group["description"], schema, instances, remotes)


def test_suite_conformance():
    shared_path("corpus", "json-schema-test-suite")
    remotes = _remotes()
    results: dict[str, Counter] = {}
    for draft in DRAFT_URIS:
        for key, case in _cases(draft, remotes):
            results.setdefault(key, Counter()).update(run_case(case))
    print("\n" + summary(results))
    total = sum(results.values(), Counter())
    assert total["invalid_accepted"] == 0
    assert total["compiled"] >= 0.85 * total["schemas"]
    assert total["agree"] >= 0.99 * total["tests"]
    assert not (regressions := ratchet(results, "json_schema_suite.json")), regressions
