"""Loading Lark grammar text with Lark's own loader: imports, and errors mapped to located Stencil errors.

`load(text, import_paths)` runs `lark.load_grammar.GrammarBuilder`, which does everything about Lark's
syntax that does not concern matching: parsing, `%import` with name mangling and aliases,
`%override`, `%extend`, `%ignore`, `%declare`, inlining terminals into terminals, and validation.
Imports are resolved by one loader of ours (so it remembers each file's text, for error locations):

- `%import common.X` (a library import): each of `import_paths`, then Lark's bundled grammars;
- `%import .x.Y` (relative): from the main text, each of `import_paths`; from an imported file,
  that file's directory.

Every Lark exception is mapped here, once, to `GrammarSyntaxError` (when a location is known) or
`GrammarError`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from lark import Token
from lark.exceptions import LarkError, UnexpectedInput, UnexpectedToken
from lark.load_grammar import Grammar as LarkGrammar
from lark.load_grammar import GrammarBuilder, PackageResource, stdlib_loader
from lark.load_grammar import _get_parser as _lark_grammar_parser  # Lark's parser of its own syntax

from grammars.errors import GrammarError, GrammarSyntaxError
from grammars.frontends.lark.nesting import nesting_problem

#: The name the main text goes by in messages (and in Lark, whose relative imports then start from "").
MAIN = "<grammar>"


@dataclass
class Sources:
    """The grammar texts taking part in one load: the main text, then each imported file.

    Args:
        text: the main grammar text.
        import_paths: directories searched by `%import`.
    """

    text: str
    import_paths: Sequence[str] = ()
    texts: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.texts[MAIN] = self.text

    def load(self) -> LarkGrammar:
        """Lark's grammar object for the text (definitions with EBNF trees, not yet compiled).

        Raises:
            GrammarSyntaxError: bad syntax in any file, an import that cannot be found, or a Lark
                validation error whose subject could be located.
            GrammarError: a Lark validation error that names nothing findable in the texts.
        """
        self._check_syntax(self.text, MAIN)
        builder = GrammarBuilder(False, [self._find_import])
        try:
            builder.load_grammar(self.text, MAIN)
            return builder.build()
        except LarkError as exc:
            raise self._mapped(str(exc)) from exc

    # ------------------------------------------------------------------------------------------
    # Imports
    # ------------------------------------------------------------------------------------------
    def _find_import(self, base_path: str | PackageResource | None, grammar_path: str) -> tuple[object, str]:
        """Lark's loader protocol: (path, text) of an imported grammar. Raises (never IOError, which
        would make Lark go on to search the working directory) when it is nowhere."""
        found: tuple[object, str] | None
        if isinstance(base_path, PackageResource):
            found = stdlib_loader(base_path, grammar_path)
        else:
            if base_path:  # relative import from an imported file: its directory only
                directories: Sequence[str] = [base_path]
            else:
                directories = self.import_paths
            found = self._read_first(directories, grammar_path)
            if found is None and base_path is None:
                try:
                    found = stdlib_loader(None, grammar_path)
                except OSError:
                    found = None
        if found is None:
            raise self._missing_import(base_path, grammar_path)
        path, text = found
        name = path.path if isinstance(path, PackageResource) else str(path)
        self._check_syntax(text, name)
        self.texts[name] = text
        return path, text

    @staticmethod
    def _read_first(directories: Sequence[str], grammar_path: str) -> tuple[str, str] | None:
        for directory in directories:
            path = os.path.join(directory, grammar_path)
            if os.path.isfile(path):
                with open(path, encoding="utf-8") as handle:
                    return path, handle.read()
        return None

    def _missing_import(self, base_path: object, grammar_path: str) -> GrammarError:
        dotted = grammar_path[: -len(".lark")].replace(os.sep, ".")
        searched = [str(base_path)] if base_path else list(self.import_paths)
        if base_path is None:
            searched.append("Lark's bundled grammars")
        reason = (
            f"cannot find the grammar {dotted!r} to import "
            f"(searched: {', '.join(searched) or 'nothing'}; "
            "pass its directory in `import_paths=` of grammars.Lark)"
        )
        pattern = re.compile(r"^%import\s+\.?" + re.escape(dotted) + r"\b", re.MULTILINE)
        return self._error_at_match(pattern, reason) or GrammarError(reason)

    # ------------------------------------------------------------------------------------------
    # Locations
    # ------------------------------------------------------------------------------------------
    def _check_syntax(self, text: str, name: str) -> None:
        """Parse `text` with Lark's own grammar parser first, for the position of a syntax error
        (its loader reports positions only inside message text), a lone surrogate (which its loader
        cannot encode) or nesting past `nesting.MAX_NESTING` (which its loader would recurse on)."""
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            reason = f"a lone surrogate {text[exc.start]!r}, which no UTF-8 text holds"
            raise GrammarSyntaxError(_in_file(name, reason), text, exc.start) from exc
        parser = _lark_grammar_parser()
        try:
            tree = parser.parse(text + "\n", "start")
        except UnexpectedInput as error:
            offset = _offset_of(text, error)
            if isinstance(error, UnexpectedToken):
                message = _short_message(error)
            else:
                message = f"unexpected character {text[offset : offset + 1]!r}"
            raise GrammarSyntaxError(_in_file(name, message), text, offset) from error
        problem = nesting_problem(tree)
        if problem is not None:
            raise GrammarSyntaxError(_in_file(name, problem[0]), text, problem[1])

    def error_at(self, token: Token, reason: str) -> GrammarSyntaxError:
        """A located error for a token of one of the texts (found by its recorded position)."""
        for name, text in self.texts.items():
            start = token.start_pos
            if start is not None and text[start : start + len(token.value)] == token.value:
                return GrammarSyntaxError(_in_file(name, reason), text, start)
        return GrammarSyntaxError(reason, self.text, _line_offset(self.text, token.line or 1))

    def error_at_definition(self, name: str, reason: str) -> GrammarError:
        """A located error for the definition (or `%declare`) of a rule or terminal."""
        bare = _unmangled(name)
        prefix = r"^[ \t]*(?:%declare\b[^\n]*?\b|%override\s+|%extend\s+)?[!?]?"
        pattern = re.compile(prefix + re.escape(bare) + r"\b", re.MULTILINE)
        return self._error_at_match(pattern, reason) or GrammarError(reason)

    def _error_at_match(self, pattern: re.Pattern[str], reason: str) -> GrammarSyntaxError | None:
        for name, text in self.texts.items():
            match = pattern.search(text)
            if match:
                return GrammarSyntaxError(_in_file(name, reason), text, match.end() - len(match.group(0).lstrip()))
        return None

    def _mapped(self, message: str) -> GrammarError:
        """A Lark validation error as ours, located at the first name it mentions that we can find:
        its definition, or for "used but not defined", its first use."""
        reason = message.strip().splitlines()[0]
        for name in _mentioned_names(reason):
            if "used but not defined" not in reason:
                found = self.error_at_definition(name, reason)
                if isinstance(found, GrammarSyntaxError):
                    return found
            use = re.compile(r"(?<![\w.\"/])" + re.escape(_unmangled(name)) + r"\b")
            located = self._error_at_match(use, reason)
            if located is not None:
                return located
        return GrammarError(reason)


def _mentioned_names(reason: str) -> list[str]:
    """Rule and terminal names in a Lark message: quoted, in parentheses, after "rule"/"terminal",
    or after a final colon."""
    patterns = (
        r"'([A-Za-z_]\w*)'",
        r"\(([A-Za-z_]\w*)\)",
        r"(?:[Rr]ule|[Tt]erminal)s?\s+([A-Za-z_]\w*)",
        r":\s*([A-Za-z_]\w*)\s*$",
    )
    names: list[str] = []
    for pattern in patterns:
        for name in re.findall(pattern, reason):
            if name not in names and name not in ("used", "as", "is"):
                names.append(name)
    return names


def _in_file(name: str, reason: str) -> str:
    return reason if name == MAIN else f"{reason} (in {name})"


#: How the terminals of Lark's own grammar read in messages.
_LARK_TOKEN_NAMES = {
    "_COLON": "':'",
    "_COMMA": "','",
    "_DOT": "'.'",
    "_DOTDOT": "'..'",
    "_LBRA": "'['",
    "_RBRA": "']'",
    "_LBRACE": "'{'",
    "_RBRACE": "'}'",
    "_LPAR": "'('",
    "_RPAR": "')'",
    "_OR": "'|'",
    "_NL_OR": "'|'",
    "_TO": "'->'",
    "TILDE": "'~'",
    "OP": "an operator",
    "_NL": "a line end",
    "RULE": "a rule name",
    "TERMINAL": "a terminal name",
    "STRING": "a string",
    "REGEXP": "a regex",
    "NUMBER": "a number",
    "RULE_MODIFIERS": "a rule modifier",
    "$END": "the end of the text",
}


def _short_message(error: UnexpectedToken) -> str:
    found = _LARK_TOKEN_NAMES.get(error.token.type, repr(str(error.token)))
    expected = sorted({_LARK_TOKEN_NAMES.get(name, name.strip("_").lower()) for name in error.expected})
    return f"unexpected {found}; expected {' or '.join(expected)}"


def _offset_of(text: str, error: UnexpectedInput) -> int:
    """Where the error is; the end of the text when Lark knows no position (it ran out of input)."""
    if error.pos_in_stream is not None:
        return min(error.pos_in_stream, len(text))
    if isinstance(error.line, int) and isinstance(error.column, int):
        return _line_offset(text, error.line) + max(error.column - 1, 0)
    return len(text)


def _line_offset(text: str, line: int) -> int:
    offset = 0
    for _ in range(line - 1):
        found = text.find("\n", offset)
        if found < 0:
            break
        offset = found + 1
    return offset


def _unmangled(name: str) -> str:
    """The name as written in its file (imports prefix names with `<grammar>__`)."""
    bare = name.split("__")[-1]
    return "_" + bare if name.startswith("_") and not bare.startswith("_") and "__" in name else bare
