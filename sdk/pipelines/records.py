"""Records read from JSON, JSON Lines and text files, each with the line it starts on.

    read_records("people.jsonl")            one record per non-blank line (also .ndjson)
    read_records("person.json")             the whole file is one record
    read_records("-")                       standard input, laid out as below
    read_records(path, layout="lines")      force either layout

Without a telling suffix (standard input, `.txt`, ...) the layout is sniffed: JSON Lines when the
first non-blank line is a JSON value on its own and others follow, else one document (so a
pretty-printed document is one record, and a broken one is reported once, at its line).

Files are read as bytes and decoded per line with `surrogateescape`, so text that is not UTF-8 comes
through and is reported as invalid at its line instead of ending the run (`is_utf8`).
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from runtime.errors import RequestError

__all__ = ["JSON_LINES_SUFFIXES", "STDIN", "STDIN_NAME", "Layout", "Record", "is_utf8", "read_records"]

#: The file argument that means standard input, and the name records from it carry.
STDIN = "-"
STDIN_NAME = "<stdin>"
#: Suffixes of files read as one JSON value per line.
JSON_LINES_SUFFIXES = frozenset({".jsonl", ".ndjson"})

#: "lines": one record per non-blank line; "document": the whole file is one record.
Layout = Literal["lines", "document"]


@dataclass(frozen=True)
class Record:
    """One record of a file.

    Attributes:
        file: the file's path as given, or "<stdin>".
        line: the 1-based line the record starts on.
        text: the record's text (a line without its line break, or the whole document).
        layout: "lines" for a line of a JSON Lines file, "document" for a whole file.
    """

    file: str
    line: int
    text: str
    layout: Layout


def read_records(file: str | os.PathLike[str], *, layout: Layout | None = None) -> Iterator[Record]:
    """The records of a file, lazily for JSON Lines files (standard input is read whole).

    Args:
        file: a path, or "-" for standard input.
        layout: "lines" or "document"; None decides from the suffix, else by sniffing the text.

    Raises:
        RequestError: the file cannot be opened or read (field "file").
    """
    name = STDIN_NAME if file == STDIN else str(file)
    suffix = None if file == STDIN else Path(file).suffix
    if layout is None and suffix is not None:
        layout = "lines" if suffix in JSON_LINES_SUFFIXES else "document" if suffix == ".json" else None
    if layout == "lines" and file != STDIN:
        yield from _lines(name, _file_lines(file))
        return
    text = _read_all(file)
    lines = text.split("\n")
    if (layout or _sniff(lines)) == "lines":
        yield from _lines(name, lines)
        return
    yield Record(name, 1, text, "document")


def is_utf8(text: str) -> bool:
    """Whether a record's text came from valid UTF-8 (bytes that were not are kept as lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _lines(name: str, lines: Iterable[str]) -> Iterator[Record]:
    for number, line in enumerate(lines, 1):
        line = line.removesuffix("\n").removesuffix("\r")
        if line.strip():
            yield Record(name, number, line, "lines")


def _file_lines(file: str | os.PathLike[str]) -> Iterator[str]:
    try:
        with open(file, "rb") as handle:
            for raw in handle:
                yield raw.decode("utf-8", errors="surrogateescape")
    except OSError as exc:
        raise RequestError(f"cannot read {str(file)!r}: {exc.strerror or exc}", "file") from exc


def _read_all(file: str | os.PathLike[str]) -> str:
    try:
        raw = sys.stdin.buffer.read() if file == STDIN else Path(file).read_bytes()
    except OSError as exc:
        raise RequestError(f"cannot read {str(file)!r}: {exc.strerror or exc}", "file") from exc
    return raw.decode("utf-8", errors="surrogateescape")


def _sniff(lines: list[str]) -> Layout:
    """JSON Lines when the first non-blank line is a JSON value of its own and more lines follow."""
    non_blank = list(itertools.islice((line for line in lines if line.strip()), 2))
    if len(non_blank) < 2:
        return "document"
    try:
        json.loads(non_blank[0])
    except json.JSONDecodeError:
        return "document"
    return "lines"
