"""Errors of the constraint engine, and the root of every Stencil error.

    StencilError                      root: every error Stencil raises (re-exported as sdk.StencilError)
    └── GrammarError                  a constraint cannot be compiled or a matcher was misused
        ├── GrammarSyntaxError        bad grammar or regex text; carries line/column/offset and a caret excerpt
        ├── UnsupportedSchemaError    a schema keyword Stencil cannot enforce; carries the keyword and JSON pointer
        ├── SchemaError               a malformed schema or an unresolvable $ref; carries the JSON pointer
        ├── EmptyLanguageError        the constraint admits no string at all
        ├── ConstraintLimitError      a size, state or time budget was exceeded while compiling or matching
        │   └── SchemaNestingError    a schema nested deeper than a depth budget; carries the pointer and the budget
        ├── TokenRejectedError        Matcher.advance() was given a token the mask forbids
        ├── RollbackError             Matcher.rollback() asked to undo more tokens than it remembers
        └── MatcherFailedError        a matcher raised something else (recursion, memory, a bug); the cause is chained

    UnsupportedSchemaWarning          (a UserWarning) what UnsupportedSchemaError becomes under lenient=True
    LarkPriorityWarning               (a UserWarning) a Lark terminal priority the union lexer does not apply

`StencilError` lives here because `grammars` is the bottom layer: `runtime` and `sdk` derive their own
errors from it, so one `except sdk.StencilError` catches them all.
"""

from __future__ import annotations


class StencilError(Exception):
    """Root of every error raised by Stencil."""


class GrammarError(StencilError):
    """A constraint cannot be compiled, or a matcher was used against its state."""


class GrammarSyntaxError(GrammarError):
    """Grammar or regex text that does not parse.

    Attributes:
        source: the full text that was being parsed.
        offset: 0-based character offset of the problem in `source`.
        line, column: 1-based position of `offset`.
        reason: what is wrong, without the location.
    """

    def __init__(self, reason: str, source: str, offset: int) -> None:
        self.reason = reason
        self.source = source
        self.offset = max(0, min(offset, len(source)))
        before = source[: self.offset]
        self.line = before.count("\n") + 1
        self.column = self.offset - (before.rfind("\n") + 1) + 1
        super().__init__(f"{reason} at line {self.line}, column {self.column}\n{self.context()}")

    def context(self, span: int = 40) -> str:
        """The offending line (clipped to `span` characters each side) with a caret under the offset."""
        start = self.source.rfind("\n", 0, self.offset) + 1
        end = self.source.find("\n", self.offset)
        end = len(self.source) if end < 0 else end
        lo = max(start, self.offset - span)
        hi = min(end, self.offset + span)
        return self.source[lo:hi] + "\n" + " " * (self.offset - lo) + "^"


class SchemaError(GrammarError):
    """A malformed schema (wrong keyword value type, unresolvable `$ref`, ...).

    Attributes:
        pointer: JSON pointer (RFC 6901) of the offending schema location, "" for the root.
        reason: what is wrong.
    """

    def __init__(self, reason: str, pointer: str = "") -> None:
        self.reason = reason
        self.pointer = pointer
        super().__init__(f"{reason} (at schema pointer {pointer or '/'!r})")


class UnsupportedSchemaError(SchemaError):
    """A schema keyword (or keyword value) Stencil cannot enforce exactly.

    Raised unless the caller asked for `lenient=True`, which downgrades it to a warning.

    Attributes:
        keyword: the JSON Schema keyword, e.g. "uniqueItems".
        pointer: JSON pointer of the schema object that holds the keyword.
    """

    def __init__(self, keyword: str, pointer: str = "", reason: str = "cannot be enforced") -> None:
        self.keyword = keyword
        super().__init__(f"keyword {keyword!r} {reason}", pointer)


class EmptyLanguageError(GrammarError):
    """The constraint admits no string at all (e.g. contradictory schema bounds)."""


class ConstraintLimitError(GrammarError):
    """A budget on grammar size, automaton states, or compile time was exceeded."""


class SchemaNestingError(ConstraintLimitError):
    """A schema nested deeper than a documented depth budget (applicators, or an enum/const value),
    refused before Python's recursion limit is reached.

    Attributes:
        pointer: JSON pointer of the schema location where the budget ran out.
        max_depth: the budget, e.g. `grammars.frontends.json_schema.compiler.MAX_NESTING`.
        what: what nests, e.g. "applicators".
    """

    def __init__(self, what: str, max_depth: int, pointer: str) -> None:
        self.what = what
        self.max_depth = max_depth
        self.pointer = pointer
        super().__init__(f"{what} nest deeper than {max_depth} (at schema pointer {pointer or '/'!r})")


class TokenRejectedError(GrammarError):
    """`Matcher.advance()` was given a token that the current mask forbids.

    Attributes:
        token_id: the rejected token.
    """

    def __init__(self, token_id: int, detail: str = "") -> None:
        self.token_id = token_id
        super().__init__(f"token {token_id} is not allowed here" + (f": {detail}" if detail else ""))


class RollbackError(GrammarError):
    """`rollback()` was asked to undo more tokens than the matcher remembers (or the matcher cannot
    roll back at all); the matcher is left as it was."""


class MatcherFailedError(GrammarError):
    """A matcher (or its constraint, building one) raised an exception that is not a Stencil error:
    `RecursionError`, `MemoryError`, a bug. The runtime raises it in place of that exception (the
    `__cause__`), so one failing constraint ends its own request, not the engine step.

    Attributes:
        operation: what the matcher was doing: "matcher", "mask", "advance", "is_accepting", "fork",
            "forced_bytes", "check_tokens" or "rollback".
    """

    def __init__(self, operation: str, cause: BaseException) -> None:
        self.operation = operation
        super().__init__(f"the constraint's {operation}() failed: {type(cause).__name__}: {cause}")


class UnsupportedSchemaWarning(UserWarning):
    """A schema keyword that is not enforced, reported instead of raised because `lenient=True`."""


class LarkPriorityWarning(UserWarning):
    """A Lark terminal priority decides between overlapping terminals, which the union lexer does not
    do: both terminals are offered to the parser instead (a superset of Lark's language)."""
