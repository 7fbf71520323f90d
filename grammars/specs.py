"""Constraint specifications that are not JSON Schemas or Python types."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

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


@dataclass(frozen=True)
class Lark:
    """Output that is a sentence of a Lark grammar.

    Args:
        text: the grammar in Lark's syntax (`%import common.*`, `%ignore`, templates, ...).
        start: the start rule.
    """

    text: str
    start: str = "start"


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
