"""The Lark grammars shipped with Stencil (`grammars/library/*.lark`), by name.

    c = grammars.compile(grammars.Lark(library_grammar("sql_select")))

Each grammar is original work of the Stencil project, documented in its header comment with an
example of what it accepts:

- `arithmetic`: expressions with precedence, unary signs, variables and function calls;
- `csv`: comma-separated values as RFC 4180 defines them (quoted fields, LF or CRLF);
- `json`: any JSON text (RFC 8259);
- `sql_select`: SELECT queries, the read-only subset common to SQLite, PostgreSQL and MySQL;
- `tool_call`: Python-style function calls with literal arguments ("pythonic" tool calling).
"""

from __future__ import annotations

from importlib import resources

from grammars.errors import GrammarError

#: The names `library_grammar` knows, sorted.
LIBRARY_NAMES = ("arithmetic", "csv", "json", "sql_select", "tool_call")


def library_grammar(name: str) -> str:
    """The text of a shipped Lark grammar (its start rule is `start`).

    Args:
        name: one of `LIBRARY_NAMES`.
    Returns:
        The grammar text, for `grammars.Lark(text)` or `grammars.frontends.lark.grammar.lark_grammar(text)`.
    Raises:
        GrammarError: no shipped grammar has that name (the message lists the names).
    """
    if name not in LIBRARY_NAMES:
        raise GrammarError(f"no library grammar named {name!r}; the library has: {', '.join(LIBRARY_NAMES)}")
    return (resources.files("grammars") / "library" / f"{name}.lark").read_text(encoding="utf-8")
