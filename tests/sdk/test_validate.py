"""`sdk.validate` and `stencil validate`: records, line numbers, JSON pointers, exit codes, and
agreement with the JSON-Schema-Test-Suite's labels (jsonschema is the reference)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

import grammars
import sdk
from sdk.cli import EXIT_USAGE, main
from tests.shared_data import SHARED, shared_path

REPO = Path(__file__).resolve().parents[2]
AGE_SCHEMA = {"type": "object", "properties": {"age": {"type": "integer", "minimum": 0}}, "required": ["age"]}


class Item(BaseModel):
    sku: str = Field(max_length=4)
    qty: int


class Order(BaseModel):
    items: list[Item]


def write(path: Path, text: str | bytes) -> str:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return str(path)


def summary(report: sdk.ValidationReport) -> list[tuple[int | None, str, str]]:
    return [(v.line, v.pointer, v.type) for v in report.violations]


def test_json_lines_report_each_failing_record_at_its_line_with_a_pointer(tmp_path: Path) -> None:
    lines = '{"age": 3}\n{"age": -1}\n\n{"age": "x"}\n{bad\n{}\n{"age": NaN}\n'
    report = sdk.validate(AGE_SCHEMA, write(tmp_path / "a.jsonl", lines))
    assert summary(report) == [
        (2, "/age", "minimum"),
        (4, "/age", "type"),
        (5, "", "invalid_json"),
        (6, "", "required"),
        (7, "", "invalid_json"),  # NaN is not JSON
    ]
    assert (report.num_records, report.num_invalid, report.is_valid) == (6, 5, False)
    assert str(report.violations[0]) == f"{tmp_path / 'a.jsonl'}:2: /age: -1 is less than the minimum of 0"


def test_a_document_is_one_record_and_a_syntax_error_names_its_own_line(tmp_path: Path) -> None:
    good = write(tmp_path / "good.json", json.dumps({"age": 4}, indent=2))
    broken = write(tmp_path / "broken.json", '\n{\n  "age": 3,\n}\n')
    report = sdk.validate(AGE_SCHEMA, good, broken)
    assert (report.num_files, report.num_records) == (2, 2)
    assert [(v.file, v.line, v.type) for v in report.violations] == [(broken, 4, "invalid_json")]


def test_pointers_escape_and_index_into_arrays() -> None:
    schema = {"properties": {"a/b~c": {"type": "array", "items": {"type": "string"}}}}
    (violation,) = sdk.Validator(schema).errors({"a/b~c": ["x", 2]})
    assert (violation.file, violation.line, violation.pointer) == (None, None, "/a~1b~0c/1")


def test_a_pydantic_type_is_validated_in_json_mode_with_pointers_from_its_loc(tmp_path: Path) -> None:
    validator = sdk.Validator(Order)
    assert validator.errors({"items": [{"sku": "ab", "qty": 1}]}) == []
    errors = validator.errors({"items": [{"sku": "ab", "qty": 1}, {"sku": "toolong", "qty": "x"}]})
    assert [(e.pointer, e.type) for e in errors] == [
        ("/items/1/sku", "string_too_long"),
        ("/items/1/qty", "int_parsing"),
    ]
    report = sdk.validate(Order, write(tmp_path / "o.jsonl", '{"items": []}\n{"items": {}}\n'))
    assert summary(report) == [(2, "/items", "list_type")]


def test_a_grammar_checks_json_strings_in_json_lines_and_whole_texts_elsewhere(tmp_path: Path) -> None:
    grammar = sdk.Lark('start: "a"+ "b"')
    report = sdk.validate(grammar, write(tmp_path / "t.jsonl", '"aab"\n"ba"\n3\n'))
    assert summary(report) == [(2, "", "not_in_language"), (3, "", "not_a_string")]
    assert sdk.validate(grammar, write(tmp_path / "ok.txt", "aaab\n")).is_valid  # one final line break is not text
    assert not sdk.validate(grammar, write(tmp_path / "no.txt", "aaab\n\n")).is_valid


def test_bytes_that_are_not_utf8_are_an_invalid_record_at_their_line(tmp_path: Path) -> None:
    report = sdk.validate(AGE_SCHEMA, write(tmp_path / "b.jsonl", b'{"age": 1}\n{"age": "\xff"}\n'))
    assert summary(report) == [(2, "", "invalid_utf8")]


@pytest.mark.parametrize(
    ("text", "layout", "expected"),
    [
        ('{"age": 1}\n{"age": -1}\n', None, [(2, "/age", "minimum")]),  # sniffed as JSON Lines
        ('{\n  "age": -1\n}\n', None, [(1, "/age", "minimum")]),  # one pretty document
        ('{"age": 1}\n{"age": -1}\n', "document", [(2, "", "invalid_json")]),  # forced: extra data on line 2
    ],
)
def test_stdin_is_read_as_json_lines_or_one_document(
    text: str, layout: Any, expected: list[tuple[int, str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
    report = sdk.validate(AGE_SCHEMA, "-", layout=layout)
    assert summary(report) == expected
    assert {v.file for v in report.violations} == {"<stdin>"}


def test_the_schema_draft_and_its_format_checker_are_used() -> None:
    draft7 = {"$schema": "http://json-schema.org/draft-07/schema#", "items": [{"type": "integer"}]}
    assert sdk.Validator(draft7).errors(["x"]) != []  # draft 7 tuple `items`; 2020-12 rejects the schema
    with pytest.raises(grammars.SchemaError, match="not a valid schema"):
        sdk.Validator({"items": [{"type": "integer"}]})
    assert [e.type for e in sdk.Validator({"format": "email"}).errors("not an address")] == ["format"]


def test_remote_refs_resolve_from_resources_only() -> None:
    schema = {"$ref": "http://example.com/age.json"}
    resources = {"http://example.com/age.json": {"type": "integer", "minimum": 0}}
    validator = sdk.Validator(sdk.Schema(schema, resources=resources))
    assert validator.errors(3) == [] and [e.type for e in validator.errors(-3)] == ["minimum"]
    with pytest.raises(grammars.SchemaError, match="does not resolve"):
        sdk.Validator(schema).errors(3)


def test_what_is_not_a_specification_is_a_typed_error() -> None:
    with pytest.raises(sdk.UnsupportedOutputTypeError):
        sdk.Validator(42)


# The command line


def test_cli_exit_codes_and_text_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    schema = write(tmp_path / "s.json", json.dumps(AGE_SCHEMA))
    good = write(tmp_path / "good.jsonl", '{"age": 1}\n{"age": 2}\n')
    bad = write(tmp_path / "bad.jsonl", '{"age": 1}\n{"age": -2}\n')
    assert main(["validate", schema, good]) == 0
    assert main(["validate", schema, good, bad]) == 1
    out, err = capsys.readouterr()
    assert out == f"{bad}:2: /age: -2 is less than the minimum of 0\n"
    assert "4 records in 2 file(s): 1 invalid" in err


def test_cli_json_format_prints_one_object_per_violation_then_a_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = write(tmp_path / "bad.jsonl", '{"age": -2}\n{"age": 1}\n[]\n')
    assert main(["validate", json.dumps(AGE_SCHEMA), bad, "--format", "json"]) == 1  # an inline schema
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows == [
        {"file": bad, "line": 1, "pointer": "/age", "message": "-2 is less than the minimum of 0", "type": "minimum"},
        {"file": bad, "line": 3, "pointer": "", "message": "[] is not of type 'object'", "type": "type"},
        {"summary": {"files": 1, "records": 3, "invalid": 2, "violations": 2}},
    ]


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ('{"type": "no-such-type"}', "not a valid schema"),
        ("missing.json", "cannot read"),
        ("no_such_module_xyz:Model", "cannot import module"),
        ("tests.sdk.test_validate:NoSuchName", "has no"),
        ("broken.lark", "start"),
    ],
)
def test_cli_schema_errors_exit_2_with_one_line(
    schema: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "broken.lark", "start: undefined_rule\n")
    data = write(tmp_path / "d.jsonl", "{}\n")
    assert main(["validate", schema, data]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("stencil: error: ") and message in err and err.count("\n") == 1


def test_cli_missing_input_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", json.dumps(AGE_SCHEMA), str(tmp_path / "nope.jsonl")]) == EXIT_USAGE
    assert "cannot read" in capsys.readouterr().err


def test_cli_reads_stdin_and_a_type_from_the_current_directory(tmp_path: Path) -> None:
    write(tmp_path / "people.py", "from pydantic import BaseModel\nclass Person(BaseModel):\n    age: int\n")
    completed = subprocess.run(
        [sys.executable, "-m", "sdk", "validate", "people:Person", "-"],
        input='{"age": 1}\n{"age": "old"}\n',
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )
    assert completed.returncode == 1, completed.stderr
    assert completed.stdout.startswith("<stdin>:2: /age: Input should be a valid integer")


# Agreement with the JSON-Schema-Test-Suite

SUITE = SHARED / "corpus" / "json-schema-test-suite"
DRAFT_URIS = {"draft2020-12": None, "draft7": "http://json-schema.org/draft-07/schema#"}


def _suite_cases() -> Any:
    """(file, group, schema, data, label) of every test of the two drafts' main folders. Draft 7
    schemas carry no `$schema`, so the draft-07 one is added. `stencil validate` asserts formats (as
    the constraint engine does) wherever jsonschema's format checker knows the format, so there the
    strings the suite describes as invalid are expected invalid."""
    for draft, uri in DRAFT_URIS.items():
        for path in sorted((SUITE / draft).glob("*.json")):
            for group in json.loads(path.read_text()):
                schema = group["schema"]
                if uri and isinstance(schema, dict) and "$schema" not in schema:
                    schema = {"$schema": uri, **schema}
                for test in group["tests"]:
                    label = test["valid"]
                    if (
                        path.name == "format.json"
                        and isinstance(test["data"], str)
                        and "invalid" in test["description"]
                    ):
                        label = label and not _asserted(schema)
                    yield f"{draft}/{path.name}", group["description"], schema, test["data"], label


def _asserted(schema: dict[str, Any]) -> bool:
    import jsonschema

    validator_class = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return schema.get("format") in validator_class.FORMAT_CHECKER.checkers


@pytest.mark.slow  # walks an external corpus (about a second)
def test_agrees_with_the_json_schema_test_suite_labels() -> None:
    shared_path("corpus", "json-schema-test-suite")
    remotes = {
        "http://localhost:1234/" + path.relative_to(SUITE / "remotes").as_posix(): json.loads(path.read_text())
        for path in sorted((SUITE / "remotes").rglob("*.json"))
    }
    validators: dict[str, sdk.Validator | grammars.SchemaError] = {}
    num_agree, disagreements, skipped_groups = 0, [], set()
    for file, group, schema, data, label in _suite_cases():
        key = json.dumps(schema)
        if key not in validators:
            try:
                validators[key] = sdk.Validator(sdk.Schema(schema, resources=remotes))
            except grammars.SchemaError as exc:
                validators[key] = exc
        validator = validators[key]
        if isinstance(validator, grammars.SchemaError):
            skipped_groups.add((file, group, validator.pointer))
            continue
        if (validator.errors(data) == []) == label:
            num_agree += 1
        else:
            disagreements.append((file, group, data))
    assert disagreements == []
    assert num_agree > 1100
    # Python's `re` has no \p{...}: jsonschema's metaschema check rejects these two patterns.
    assert skipped_groups == {
        ("draft2020-12/pattern.json", "pattern with Unicode property escape requires unicode mode", "/pattern"),
        ("draft2020-12/patternProperties.json", "patternProperties with Unicode property escape", "/patternProperties"),
    }
