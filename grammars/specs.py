"""Constraint specifications beyond a bare JSON Schema or Python type: regexes, Lark and GBNF grammars, choices,
and a JSON Schema together with its compile options (`Schema`), so that the options can travel
wherever a specification goes (`output=` in the SDK).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from grammars.errors import GrammarError


@dataclass(frozen=True)
class Regex:
    """Output that fully matches a regular expression.

    Args:
        pattern: the regex; fullmatch semantics (the whole output must match).
        flavor: "python" (`re` syntax and classes) or "ecmascript" (JSON Schema `pattern` syntax).
    """

    pattern: str
    flavor: Literal["python", "ecmascript"] = "python"


@dataclass(frozen=True, init=False)
class Lark:
    """Output that is a sentence of a Lark grammar.

    `%import` reads grammar files from the directories in `import_paths` only (and, for
    `%import common.X`-style library imports, from Lark's bundled grammars after them); a file
    imported from one of them may import relative to its own directory. Nothing else on disk is
    read. Files are read when the grammar is compiled, and the compiled constraint is cached by
    text, start rule and directories: an edited file is read again in a new process.

    Args:
        text: the grammar in Lark's syntax (`%import common.*`, `%ignore`, templates, ...).
        start: the start rule.
        import_paths: directories `%import` searches, as str or `os.PathLike` (kept as str).
    Raises:
        GrammarError: `import_paths` is a single str, or holds something that is not a str or a
            str-valued path.
    """

    text: str
    start: str
    import_paths: tuple[str, ...]

    def __init__(self, text: str, start: str = "start", *, import_paths: Sequence[str | os.PathLike[str]] = ()) -> None:
        object.__setattr__(self, "text", text)
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "import_paths", _directories(import_paths))


@dataclass(frozen=True)
class GBNF:
    """Output that is a sentence of a GBNF grammar (llama.cpp's grammar format), so that llama.cpp
    users can bring their grammars; docs/gbnf.md lists the syntax and how the meaning differs.

    Args:
        text: the grammar: `name ::= ...` rules over string literals, `[...]` classes, `.`, groups
            and `* + ? {m,n}` repetitions.
        start: the start rule (llama.cpp always starts at `root`).
    """

    text: str
    start: str = "root"


@dataclass(frozen=True, init=False)
class Choice:
    """Output that is exactly one of a list of strings (or enum values, by their value).

    Raises:
        GrammarError: an option holds a lone surrogate (`"\\ud800"`), which no UTF-8 output spells.
    """

    options: tuple[str, ...]

    def __init__(self, options: Sequence[object]) -> None:
        values = tuple(str(getattr(o, "value", o)) for o in options)
        for index, value in enumerate(values):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise GrammarError(
                    f"Choice option {index} ({value!r}) holds a lone surrogate at offset {exc.start}, "
                    "which no UTF-8 text spells"
                ) from exc
        object.__setattr__(self, "options", values)


@dataclass(frozen=True)
class Schema:
    """Output that is JSON valid against a JSON Schema, with the options of compiling it.

    `grammars.compile(Schema(s, lenient=True))` is `grammars.compile(s, lenient=True)`; the spec
    exists so that the options can go wherever a specification goes (`output=` in the SDK).

    Args:
        schema: the JSON Schema (a dict, or a bool schema).
        lenient: keywords Stencil cannot enforce, and probable misspellings of enforced ones, warn
            (`UnsupportedSchemaWarning`) and are ignored instead of raising.
        resources: schema documents that remote `$ref`s may use, by absolute URI (never fetched).
        whitespace: JSON text policy: "flexible", "compact" or "spaced" (see `grammars.compile`).
        indent: JSON pretty-printed with this indent (overrides `whitespace`).
    Raises:
        GrammarError: `schema` is not a dict or a bool (the options are checked when compiling).
    """

    schema: dict[str, Any] | bool
    lenient: bool = field(default=False, kw_only=True)
    resources: Mapping[str, Any] | None = field(default=None, kw_only=True)
    whitespace: str = field(default="flexible", kw_only=True)
    indent: int | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        if not isinstance(self.schema, (dict, bool)):
            raise GrammarError(f"a Schema's schema is a JSON Schema dict or bool, not a {type(self.schema).__name__}")


def _directories(paths: object) -> tuple[str, ...]:
    """`import_paths` as a tuple of str (hashable, so a `Lark` can key caches).

    Raises:
        GrammarError: a single str (which would be read as one directory per character), or an
            item that is not a str or a str-valued `os.PathLike`.
    """
    if isinstance(paths, (str, bytes)) or not isinstance(paths, Sequence):
        raise GrammarError(f"import_paths is a sequence of directories, not a {type(paths).__name__}")
    directories = []
    for path in paths:
        directory = os.fspath(path) if isinstance(path, (str, os.PathLike)) else None
        if not isinstance(directory, str):
            raise GrammarError(f"an import path is a str or os.PathLike naming a directory, not {path!r}")
        directories.append(directory)
    return tuple(directories)
