"""Unicode tables for regex character classes: general categories, Python's \\d \\w \\s, case folding.

Everything is derived from the running interpreter's `unicodedata` (and, for Python's classes and case
folding, from its `re` engine itself), so the python regex flavor means exactly what `re` means on
this interpreter.

Cost model: a scan of all 1.1M code points takes 0.05-0.2 s, too slow for `\\d` in every Lark grammar.
The tables that ordinary patterns need (Python's `\\d \\w \\s` and the case-fold classes) are therefore
stored precomputed in `grammars/core/_unicode_tables.py`, written by

    .venv/bin/python -m grammars.core.unicode_data

and used only when their Unicode version equals the interpreter's; otherwise they are scanned on first
use. General categories (`\\p{..}`, rarer) are always scanned, once, on first use (~0.15 s).

Ranges are tuples of inclusive `(lo, hi)` code point pairs, sorted and disjoint.
"""

from __future__ import annotations

import array
import functools
import itertools
import re
import unicodedata
from pathlib import Path
from types import ModuleType

Ranges = tuple[tuple[int, int], ...]

#: The two-letter general categories, grouped by their one-letter major class.
MAJOR_CATEGORIES: dict[str, tuple[str, ...]] = {
    "C": ("Cc", "Cf", "Cn", "Co", "Cs"),
    "L": ("Ll", "Lm", "Lo", "Lt", "Lu"),
    "LC": ("Ll", "Lt", "Lu"),
    "M": ("Mc", "Me", "Mn"),
    "N": ("Nd", "Nl", "No"),
    "P": ("Pc", "Pd", "Pe", "Pf", "Pi", "Po", "Ps"),
    "S": ("Sc", "Sk", "Sm", "So"),
    "Z": ("Zl", "Zp", "Zs"),
}

#: Long names and aliases of general category values (Unicode PropertyValueAliases.txt, gc).
CATEGORY_ALIASES: dict[str, str] = {
    "Other": "C",
    "Control": "Cc",
    "cntrl": "Cc",
    "Format": "Cf",
    "Unassigned": "Cn",
    "Private_Use": "Co",
    "Surrogate": "Cs",
    "Letter": "L",
    "Cased_Letter": "LC",
    "Lowercase_Letter": "Ll",
    "Modifier_Letter": "Lm",
    "Other_Letter": "Lo",
    "Titlecase_Letter": "Lt",
    "Uppercase_Letter": "Lu",
    "Mark": "M",
    "Combining_Mark": "M",
    "Spacing_Mark": "Mc",
    "Enclosing_Mark": "Me",
    "Nonspacing_Mark": "Mn",
    "Number": "N",
    "Decimal_Number": "Nd",
    "digit": "Nd",
    "Letter_Number": "Nl",
    "Other_Number": "No",
    "Punctuation": "P",
    "punct": "P",
    "Connector_Punctuation": "Pc",
    "Dash_Punctuation": "Pd",
    "Close_Punctuation": "Pe",
    "Final_Punctuation": "Pf",
    "Initial_Punctuation": "Pi",
    "Other_Punctuation": "Po",
    "Open_Punctuation": "Ps",
    "Symbol": "S",
    "Currency_Symbol": "Sc",
    "Modifier_Symbol": "Sk",
    "Math_Symbol": "Sm",
    "Other_Symbol": "So",
    "Separator": "Z",
    "Line_Separator": "Zl",
    "Paragraph_Separator": "Zp",
    "Space_Separator": "Zs",
}


def _all_scalars() -> str:
    """Every Unicode scalar value once, in order (surrogates left out), as one string."""
    low = array.array("I", range(0xD800)).tobytes().decode("utf-32-le")
    high = array.array("I", range(0xE000, 0x110000)).tobytes().decode("utf-32-le")
    return low + high


def _string_index_to_code_point(index: int) -> int:
    return index if index < 0xD800 else index + 0x800


def _spans_to_ranges(spans: list[tuple[int, int]]) -> Ranges:
    """Half-open spans of `_all_scalars()` indices -> merged inclusive code point ranges."""
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        lo, hi = _string_index_to_code_point(start), _string_index_to_code_point(end - 1)
        if merged and merged[-1][1] + 1 >= lo:
            merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    return tuple(merged)


def scan_python_class(letter: str) -> Ranges:
    """The code points Python's `re` matches with `\\d`, `\\w` or `\\s` (str patterns, Unicode mode).

    Computed by letting `re` itself scan every scalar value, so it is Python's definition by construction.
    """
    spans = [m.span() for m in re.finditer(f"\\{letter}+", _all_scalars())]
    return _spans_to_ranges(spans)


def scan_case_fold_classes() -> tuple[tuple[int, ...], ...]:
    """The classes of characters Python's `re` treats as equal under IGNORECASE (classes of 2+ members).

    Two characters are joined when one is the other's simple lowercase or simple uppercase mapping;
    the classes are the transitive closure (`_sre.unicode_tolower` is the simple lowercase mapping `re`
    uses; `str.lower` would give the full mapping, e.g. two characters for U+0130).
    """
    # The mapping re's IGNORECASE uses; only needed to regenerate the tables. CPython's private
    # module has no stub in typeshed.
    import _sre  # type: ignore[import-not-found]

    parent: dict[int, int] = {}

    def find(x: int) -> int:
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    for char in _all_scalars():
        code = ord(char)
        upper = char.upper()
        partners = [_sre.unicode_tolower(code)] + ([ord(upper)] if len(upper) == 1 else [])
        for partner in partners:
            if partner != code:
                a, b = find(code), find(partner)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    classes: dict[int, list[int]] = {}
    for code in parent:
        classes.setdefault(find(code), []).append(code)
    for root, members in classes.items():
        if root not in members:
            members.append(root)
    return tuple(sorted(tuple(sorted(members)) for members in classes.values()))


def _current_tables() -> ModuleType | None:
    """The generated tables module if it matches this interpreter's Unicode version, else None."""
    from grammars.core import _unicode_tables  # imported on first use: 40 KB of constants

    return _unicode_tables if _unicode_tables.UNIDATA_VERSION == unicodedata.unidata_version else None


@functools.cache
def python_class(letter: str) -> Ranges:
    """Python's `\\d`, `\\w` or `\\s` (`letter` is "d", "w" or "s") as code point ranges.

    Raises:
        KeyError: `letter` is not one of "d", "w", "s".
    """
    if letter not in ("d", "w", "s"):
        raise KeyError(letter)
    tables = _current_tables()
    return tables.PYTHON_CLASSES[letter] if tables else scan_python_class(letter)


@functools.cache
def case_fold_partners() -> dict[int, tuple[int, ...]]:
    """Code point -> every member of its case-fold class (itself included), for cased characters only."""
    tables = _current_tables()
    classes = tables.CASE_FOLD_CLASSES if tables else scan_case_fold_classes()
    return {code: members for members in classes for code in members}


@functools.cache
def _category_table() -> dict[str, Ranges]:
    """Two-letter general category -> ranges, from one scan of every scalar value."""
    table: dict[str, list[tuple[int, int]]] = {}
    index = 0
    for category, run in itertools.groupby(map(unicodedata.category, _all_scalars())):
        length = sum(1 for _ in run)
        table.setdefault(category, []).append((index, index + length))
        index += length
    return {category: _spans_to_ranges(spans) for category, spans in table.items()}


def category_ranges(code: str) -> Ranges:
    """The code points of general category `code` ("Lu", or a major class "L" / "LC"), as ranges.

    Surrogates ("Cs") have no scalar values, so "Cs" is empty.

    Raises:
        KeyError: `code` is not a general category abbreviation.
    """
    members = MAJOR_CATEGORIES.get(code, (code,))
    table = _category_table()
    if any(len(m) != 2 or m not in table and m != "Cs" for m in members):
        raise KeyError(code)
    spans = sorted(r for m in members for r in table.get(m, ()))
    merged: list[tuple[int, int]] = []
    for lo, hi in spans:
        if merged and merged[-1][1] + 1 >= lo:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return tuple(merged)


def _render_tables() -> str:
    classes = {letter: scan_python_class(letter) for letter in ("d", "s", "w")}
    lines = [
        '"""Generated by `python -m grammars.core.unicode_data` (see grammars/core/unicode_data.py); do not edit."""',
        "",
        f"UNIDATA_VERSION = {unicodedata.unidata_version!r}",
        "",
        "# Python re's \\d, \\s, \\w (str patterns) as inclusive code point ranges.",
        "PYTHON_CLASSES = {",
    ]
    for letter, ranges in classes.items():
        lines.append(f"    {letter!r}: (")
        lines.extend(f"        {', '.join(map(repr, ranges[i : i + 6]))}," for i in range(0, len(ranges), 6))
        lines.append("    ),")
    lines += ["}", "", "# Classes of characters equal under re.IGNORECASE (2+ members each).", "CASE_FOLD_CLASSES = ("]
    lines.extend(f"    {members!r}," for members in scan_case_fold_classes())
    lines.append(")")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Regenerate `grammars/core/_unicode_tables.py` for the running interpreter's Unicode version."""
    path = Path(__file__).with_name("_unicode_tables.py")
    path.write_text(_render_tables(), encoding="utf-8")
    print(f"wrote {path} (Unicode {unicodedata.unidata_version})")


if __name__ == "__main__":
    main()
