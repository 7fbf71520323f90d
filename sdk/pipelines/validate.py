"""Validation of JSON documents, JSON Lines and texts against a schema, a type or a grammar.

    report = sdk.validate(Person, "people.jsonl")              # or a JSON Schema dict, sdk.Lark(...), ...
    for violation in report.violations:
        print(violation)                                        # people.jsonl:3: /age: -1 is less than the minimum of 0
    validator = sdk.Validator(schema)                          # compiled once, then
    validator.errors({"age": -1})                               # -> [Violation(file=None, line=None, pointer="/age", ...)]

The validator is built once per specification: for a JSON Schema, the `jsonschema` validator class
of the schema's draft (`$schema`, 2020-12 by default) with that draft's format checker (the field's
reference implementation; remote `$ref`s resolve from `sdk.Schema(..., resources=...)` only, never
fetched); for a Python type, Pydantic's `TypeAdapter` in JSON mode; for a `sdk.Lark`, `sdk.Regex` or
`sdk.Choice`, the compiled constraint's `accepts`. Each JSON record is parsed once with the standard
parser (NaN and Infinity are not JSON), so a record that does not parse is a violation at its line.
A grammar checks texts: a JSON Lines record must be a JSON string (its value is the text), any other
record is the text itself, less one final line break.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pydantic
import referencing.exceptions
from pydantic import TypeAdapter

import grammars
from grammars.compiler import Constraint
from grammars.errors import SchemaError
from sdk.errors import UnsupportedOutputTypeError
from sdk.outputs import is_type_like, json_schema_validator
from sdk.pipelines.records import Layout, Record, is_utf8, read_records

__all__ = ["RecordCheck", "ValidationReport", "Validator", "Violation", "check_files", "validate"]


@dataclass(frozen=True)
class Violation:
    """One value of a record that fails the specification.

    Attributes:
        file: the file the record came from ("<stdin>"), None for a value checked in memory.
        line: the 1-based line of the record (of the syntax error, for JSON that does not parse).
        pointer: JSON pointer (RFC 6901) of the failing value in the record, "" for the whole record.
        message: what is wrong.
        type: a stable slug: the JSON Schema keyword ("minimum", "required", ...), Pydantic's error
            type ("int_parsing", ...), "invalid_json", "invalid_utf8", "not_a_string" or "not_in_language".
    """

    file: str | None
    line: int | None
    pointer: str
    message: str
    type: str

    def __str__(self) -> str:
        where = ":".join(str(part) for part in (self.file, self.line) if part is not None)
        return ": ".join(part for part in (where, self.pointer, self.message) if part)

    def to_json(self) -> dict[str, Any]:
        """The violation as one JSON object (what `stencil validate --format json` prints per line)."""
        return {
            "file": self.file,
            "line": self.line,
            "pointer": self.pointer,
            "message": self.message,
            "type": self.type,
        }


@dataclass(frozen=True)
class RecordCheck:
    """A record and its violations (none: the record is valid)."""

    record: Record
    violations: list[Violation]


@dataclass
class ValidationReport:
    """What `validate` found in its files.

    Attributes:
        violations: every violation, in file and line order.
        num_files, num_records: files and records read.
        num_invalid: records with at least one violation.
    """

    violations: list[Violation] = field(default_factory=list)
    num_files: int = 0
    num_records: int = 0
    num_invalid: int = 0

    @property
    def is_valid(self) -> bool:
        """Whether every record is valid."""
        return self.num_invalid == 0

    def add(self, check: RecordCheck) -> None:
        """Count a checked record."""
        self.num_records += 1
        self.num_invalid += bool(check.violations)
        self.violations += check.violations

    def summary(self) -> dict[str, int]:
        """The counts, as `stencil validate --format json` prints them last."""
        return {
            "files": self.num_files,
            "records": self.num_records,
            "invalid": self.num_invalid,
            "violations": len(self.violations),
        }


class Validator:
    """A specification compiled once, to check many records.

    Args:
        spec: a JSON Schema (a dict or a bool), an `sdk.Schema` (a schema with its `resources`), a
            Python type (a Pydantic model, `int`, a `Literal`, `list[...]`, ...), or an `sdk.Lark`,
            `sdk.Regex` or `sdk.Choice`.

    Raises:
        grammars.SchemaError: the schema is not valid against its draft's metaschema (pointer attached).
        UnsupportedOutputTypeError: `spec` is none of the above, or Pydantic cannot validate the type.
        grammars.GrammarError: the grammar cannot be compiled.
    """

    def __init__(self, spec: Any) -> None:
        self.spec = spec
        self._schema_validator: Any = None
        self._adapter: TypeAdapter[Any] | None = None
        self._constraint: Constraint | None = None
        if isinstance(spec, (Mapping, bool)):
            self._schema_validator = json_schema_validator(spec, {})
        elif isinstance(spec, grammars.Schema):
            self._schema_validator = json_schema_validator(spec.schema, spec.resources or {})
        elif isinstance(spec, (grammars.Lark, grammars.Regex, grammars.GBNF, grammars.Choice)):
            self._constraint = grammars.compile(spec)
        elif is_type_like(spec):
            try:
                self._adapter = TypeAdapter(spec)
            except pydantic.PydanticUserError as exc:
                raise UnsupportedOutputTypeError(spec, str(exc).splitlines()[0]) from exc
        else:
            raise UnsupportedOutputTypeError(
                spec, "expected a JSON Schema, a type, or an sdk.Schema, sdk.Lark, sdk.Regex or sdk.Choice"
            )

    def errors(self, value: Any) -> list[Violation]:
        """The violations of a JSON value held in memory (a str for a grammar); [] when valid.

        Raises:
            grammars.SchemaError: a `$ref` that does not resolve.
        """
        if self._constraint is not None:
            return _text_errors(self._constraint, value, None, None)
        return self._value_errors(value, json.dumps(value, ensure_ascii=False), None, None)

    def check(self, record: Record) -> RecordCheck:
        """The violations of a record read from a file (for a grammar, a JSON Lines record is a JSON
        string holding the text; a document is the text).

        Raises:
            grammars.SchemaError: a `$ref` that does not resolve.
        """
        file, line, text = record.file, record.line, record.text
        if not is_utf8(text):
            return RecordCheck(record, [Violation(file, line, "", "the record is not valid UTF-8", "invalid_utf8")])
        if self._constraint is not None and record.layout == "document":
            return RecordCheck(record, _text_errors(self._constraint, text.removesuffix("\n"), file, line))
        try:
            value = json.loads(text, parse_constant=_reject_constant)
        except ValueError as exc:
            error_line = line + exc.lineno - 1 if isinstance(exc, json.JSONDecodeError) else line
            message = f"not JSON: {exc.msg if isinstance(exc, json.JSONDecodeError) else exc}"
            return RecordCheck(record, [Violation(file, error_line, "", message, "invalid_json")])
        if self._constraint is not None:
            return RecordCheck(record, _text_errors(self._constraint, value, file, line))
        return RecordCheck(record, self._value_errors(value, text, file, line))

    def _value_errors(self, value: Any, text: str, file: str | None, line: int | None) -> list[Violation]:
        if self._adapter is not None:
            try:
                self._adapter.validate_json(text)
            except pydantic.ValidationError as exc:
                return [
                    Violation(file, line, _pointer(error["loc"]), error["msg"], error["type"])
                    for error in exc.errors(include_url=False)
                ]
            return []
        try:
            return [
                Violation(file, line, _pointer(error.absolute_path), error.message, str(error.validator))
                for error in self._schema_validator.iter_errors(value)
            ]
        except referencing.exceptions.Unresolvable as exc:
            raise SchemaError(f"$ref {exc.ref!r} does not resolve (pass the document as a resource)") from exc


def check_files(
    validator: Validator, files: Sequence[str | os.PathLike[str]], *, layout: Layout | None = None
) -> Iterator[RecordCheck]:
    """Every record of `files`, checked, lazily and in order (what `validate` and the CLI share).

    Raises:
        RequestError: a file cannot be read (field "file").
        grammars.SchemaError: a `$ref` that does not resolve.
    """
    for file in files:
        for record in read_records(file, layout=layout):
            yield validator.check(record)


def validate(spec: Any, *files: str | os.PathLike[str], layout: Layout | None = None) -> ValidationReport:
    """Validate the records of JSON, JSON Lines or text files against a specification.

    Args:
        spec: what `Validator` takes: a JSON Schema, an `sdk.Schema`, a type, or a grammar.
        files: paths, or "-" for standard input (see `sdk.pipelines.records` for how files are split
            into records).
        layout: "lines" or "document" to override the suffix and the sniffing.

    Returns:
        The report: `is_valid`, `violations` (each with file, line, JSON pointer and message), counts.

    Raises:
        RequestError: a file cannot be read; grammars.SchemaError, UnsupportedOutputTypeError,
            grammars.GrammarError: see `Validator`.
    """
    validator = Validator(spec)
    report = ValidationReport(num_files=len(files))
    for check in check_files(validator, files, layout=layout):
        report.add(check)
    return report


def _text_errors(constraint: Constraint, text: Any, file: str | None, line: int | None) -> list[Violation]:
    if not isinstance(text, str):
        return [Violation(file, line, "", "expected a JSON string holding the text", "not_a_string")]
    if constraint.accepts(text):
        return []
    return [Violation(file, line, "", "not a sentence of the grammar", "not_in_language")]


def _pointer(path: Sequence[Any]) -> str:
    """The JSON pointer of a path of keys and indexes (RFC 6901 escapes `~` and `/`)."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")
