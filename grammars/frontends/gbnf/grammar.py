"""GBNF grammars (llama.cpp's format) to the grammar IR: `gbnf_grammar(text)`.

`grammars.frontends.gbnf.syntax` reads the text into one IR rule per GBNF rule, under its own name;
repetitions stay `ir.repeat` counters (llama.cpp unrolls `{m,n}` into helper rules). This module
checks what llama.cpp checks after parsing (every referenced rule defined, the start rule present)
and what derives nothing, each at the position it comes from.

Where the meaning differs from llama.cpp (see docs/gbnf.md):

- Left recursion (`expr ::= expr "+" term | term`), which llama.cpp refuses, is accepted: the core
  turns it into loops (`grammars.core.left_recursion`) with the same language. What it cannot
  rewrite is refused by the parser, naming the cycle.
- A rule defined twice is an error (llama.cpp keeps the last definition).
- Counts are exact at any size (llama.cpp refuses a minimum above 2,000 and reads a maximum above
  2,000 as no maximum).
- Token syntax (`<think>`, `<[1000]>`, `!<...>`) is refused: Stencil's constraints are over text.
"""

from __future__ import annotations

from grammars.core import ir
from grammars.core.analysis import productive_rules, reachable_rules
from grammars.core.budget import Check, no_check
from grammars.errors import ConstraintLimitError, EmptyLanguageError, GrammarError
from grammars.frontends.gbnf.syntax import GBNFParser

#: Longest grammar text accepted (UTF-8 bytes), as for Lark grammars.
MAX_GRAMMAR_BYTES = 256 * 1024


def gbnf_grammar(text: str, *, start: str = "root", check: Check = no_check) -> ir.Grammar:
    """The IR grammar of a GBNF text.

    Args:
        text: the grammar, in llama.cpp's GBNF syntax.
        start: the start rule (llama.cpp's is always `root`).
        check: the compile deadline, called per rule.
    Returns:
        The grammar, with one IR rule per GBNF rule, named as in the text.
    Raises:
        GrammarSyntaxError: bad syntax, token syntax, a rule defined twice, a reference to an
            undefined rule, or a rule (other than the start rule) that derives no finite string,
            with its line and column.
        GrammarError: `text` or `start` is not a str, or the start rule is not defined.
        EmptyLanguageError: the start rule derives no finite string.
        ConstraintLimitError: a text over MAX_GRAMMAR_BYTES, or from `check`.
    """
    if not isinstance(text, str) or not isinstance(start, str):
        raise GrammarError(
            f"a GBNF grammar and its start rule must be str, not {type(text).__name__} and {type(start).__name__}"
        )
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_GRAMMAR_BYTES:
        raise ConstraintLimitError(f"the GBNF grammar has {size} bytes; the limit is {MAX_GRAMMAR_BYTES}")
    parser = GBNFParser(text, check)
    rules = parser.parse()
    for name, offset in sorted(parser.references.items(), key=lambda item: item[1]):
        if name not in rules:
            raise parser.error(f"undefined rule {name!r}", offset)
    if start not in rules:
        raise GrammarError(f"start rule {start!r} is not defined (rules: {', '.join(sorted(rules)) or 'none'})")
    _check_finite(parser, rules, start)
    return ir.Grammar(rules, start)


def _check_finite(parser: GBNFParser, rules: dict[str, ir.Expr], start: str) -> None:
    """Refuse reachable rules that derive no finite string (every expansion needs one of them again,
    as in `a ::= "x" a`): they are a mistake the core would silently prune.

    Raises:
        EmptyLanguageError: the start rule is one of them.
        GrammarSyntaxError: another rule is (at the first one's definition).
    """
    stuck = sorted(reachable_rules(rules, start) - productive_rules(rules), key=parser.definitions.__getitem__)
    if not stuck:
        return
    reason = f"rules that derive no finite string (every expansion needs one of them again): {', '.join(stuck)}"
    if start in stuck:
        raise EmptyLanguageError(f"the grammar admits no string: {reason}")
    raise parser.error(reason, parser.definitions[stuck[0]])
