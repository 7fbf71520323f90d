"""The whitespace policy of generated JSON text: where spaces and newlines may go, always bounded.

    flexible  at most one space after `,` and `:` and nowhere else (the default): accepts both
              compact text and `json.dumps` default text (", " and ": ")
    compact   no whitespace at all
    spaced    exactly one space after `,` and `:`
    indent=n  exactly `json.dumps(obj, indent=n)`: newline and n x depth spaces before each member,
              `,` without a space, `": "`, empty containers as `[]` / `{}`

Whitespace never stands alone: it is part of the punctuation lexeme it follows (`, ?`, `[\\n    `), so
the lexer's greedy longest match can never cut a text wrongly and there is no unbounded whitespace
for a model to run away in. Under `indent` the lexemes depend on the nesting depth, so rules are
compiled per depth (`is_depth_sensitive`) up to MAX_INDENT_DEPTH.
"""

from __future__ import annotations

import functools

from grammars.core import byte_regex as rx
from grammars.core import ir
from grammars.errors import GrammarError

WHITESPACE_POLICIES = ("flexible", "compact", "spaced")
#: Deepest nesting an indented text may reach (rules are compiled per depth under `indent`).
MAX_INDENT_DEPTH = 48
#: Largest indent accepted.
MAX_INDENT = 16


@functools.lru_cache(maxsize=len(WHITESPACE_POLICIES))
def _separators(whitespace: str) -> tuple[ir.Expr, ir.Expr]:
    """The comma and colon lexemes of a policy, built once (like every front-end constant)."""
    space = {"flexible": rx.optional(rx.literal(b" ")), "compact": rx.EPSILON, "spaced": rx.literal(b" ")}[whitespace]
    return ir.lex(rx.concat(rx.literal(b","), space), "','"), ir.lex(rx.concat(rx.literal(b":"), space), "':'")


class Layout:
    """Punctuation lexemes of one whitespace policy.

    Args:
        whitespace: "flexible", "compact" or "spaced".
        indent: pretty-print with this many spaces per level (overrides `whitespace`), or None.
    Raises:
        GrammarError: an unknown policy or an indent outside 0..MAX_INDENT.
    """

    def __init__(self, whitespace: str = "flexible", indent: int | None = None) -> None:
        if whitespace not in WHITESPACE_POLICIES:
            raise GrammarError(f"unknown whitespace policy {whitespace!r}; use one of {WHITESPACE_POLICIES}")
        if indent is not None and (
            isinstance(indent, bool) or not isinstance(indent, int) or not 0 <= indent <= MAX_INDENT
        ):
            raise GrammarError(f"indent must be an int in 0..{MAX_INDENT} or None, not {indent!r}")
        self.whitespace = whitespace
        self.indent = indent
        if indent is None:
            self._comma, self._colon = _separators(whitespace)
        else:
            self._colon = ir.lit(": ")

    @property
    def is_depth_sensitive(self) -> bool:
        """Whether lexemes depend on the nesting depth (only under `indent`)."""
        return self.indent is not None

    def _newline(self, depth: int) -> str:
        return "\n" + " " * (self.indent * depth)  # type: ignore[operator]

    def colon(self) -> ir.Expr:
        """Between a key and its value."""
        return self._colon

    def comma(self, depth: int) -> ir.Expr:
        """Between two members of a container at `depth` (members sit at depth + 1)."""
        if self.indent is None:
            return self._comma
        return ir.lit("," + self._newline(depth + 1))

    def open(self, bracket: str, depth: int) -> ir.Expr:
        """Opens a nonempty container (`bracket` is "[" or "{") and leads to its first member."""
        return ir.lit(bracket if self.indent is None else bracket + self._newline(depth + 1))

    def close(self, bracket: str, depth: int) -> ir.Expr:
        """Closes a nonempty container after its last member (`bracket` is "]" or "}")."""
        return ir.lit(bracket if self.indent is None else self._newline(depth) + bracket)

    def empty(self, brackets: str) -> ir.Expr:
        """An empty container, "[]" or "{}"."""
        if self.indent is None:
            return ir.seq(ir.lit(brackets[0]), ir.lit(brackets[1]))
        return ir.lit(brackets)
