"""GBNF text (llama.cpp's grammar format) to IR rules, read the way llama.cpp's parser reads it.

A grammar is rules `name ::= alternatives`; names are ASCII letters, digits and dashes. Whitespace
and `#` comments separate symbols; a newline ends a rule except inside parentheses and right after
`::=` or `|`. Symbols: string literals `"..."`, classes `[...]` / `[^...]` with ranges, `.` (any
character), rule names and groups `( ... )`, each followed by any number of `* + ? {m} {m,} {m,n}`.
Escapes (in literals and classes alike): `\\n \\r \\t \\\\ \\" \\[ \\] \\-`, `\\xHH`, `\\uHHHH`,
`\\UHHHHHHHH`; any other escape is an error, as in llama.cpp.

GBNF matches characters (Unicode code points), with no lexer. Each character position becomes one
lexeme: a literal is a sequence of one-character lexemes, a class or `.` one lexeme over its set,
encoded as UTF-8 (`grammars.core.charset.utf8_term`). One-character lexemes never extend each other
(UTF-8 is prefix-free), so the greedy lexer (`grammars.core.automaton`) splits every text the one
way llama.cpp does: the language is exactly the grammar's.
"""

from __future__ import annotations

import string

from grammars.core import ir
from grammars.core.budget import Check
from grammars.core.charset import ANY_CHAR, CharSet, utf8_term
from grammars.errors import GrammarSyntaxError
from grammars.frontends.regex.charclass import Scanner

#: Groups nested deeper than this (or more postfix operators on one symbol) are refused: the
#: parser and the IR's helpers recurse per level.
MAX_NESTING = 100

_NAME_CHARS = string.ascii_letters + string.digits + "-"
_HEX = string.hexdigits
_HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}
_SIMPLE_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "[": "[", "]": "]", "-": "-"}
_REPEAT_OPS = {"*": (0, None), "+": (1, None), "?": (0, 1)}
_CONTINUATION_HINT = "a rule goes on past a newline only after '::=' or '|', or inside parentheses"


class GBNFParser:
    """Reads a GBNF text into rules, keeping where each rule is defined and first referenced.

    Args:
        text: the grammar.
        check: the compile deadline, called per rule.
    """

    def __init__(self, text: str, check: Check) -> None:
        self._scanner = Scanner(text, "python")  # only its cursor is used: the flavor is never read
        self._check = check
        self.rules: dict[str, ir.Expr] = {}
        self.definitions: dict[str, int] = {}  # rule name -> offset of its name where it is defined
        self.references: dict[str, int] = {}  # rule name -> offset of its first use
        self._lexemes: dict[CharSet, ir.Expr] = {}

    def parse(self) -> dict[str, ir.Expr]:
        """The rules of the whole text, by name, in definition order.

        Raises:
            GrammarSyntaxError: bad syntax, a rule defined twice, or an unsupported construct, at
                its position.
        """
        self._space(newlines=True)
        while self._scanner.peek():
            self._check()
            self._rule()
        return self.rules

    def error(self, reason: str, offset: int) -> GrammarSyntaxError:
        """A located error at `offset` of the text (for the checks made after parsing, too)."""
        return self._scanner.error(reason, offset)

    # ------------------------------------------------------------------------------------------
    # Rules and their structure
    # ------------------------------------------------------------------------------------------
    def _rule(self) -> None:
        scanner = self._scanner
        start = scanner.pos
        name = self._name()
        self._space(newlines=False)
        if not scanner.take_if("::="):
            raise self.error(f"expecting '::=' after the rule name {name!r}{self._hint()}", scanner.pos)
        if name in self.definitions:
            line = scanner.pattern.count("\n", 0, self.definitions[name]) + 1
            raise self.error(f"rule {name!r} is defined twice (first at line {line})", start)
        self.definitions[name] = start
        self._space(newlines=True)
        self.rules[name] = self._alternatives(depth=0)
        char = scanner.peek()
        if char == ")":
            raise self.error("unmatched ')'", scanner.pos)
        if char and char not in "\r\n":
            raise self.error(f"unexpected {char!r}", scanner.pos)
        self._space(newlines=True)

    def _name(self) -> str:
        name = self._scanner.take_while(_NAME_CHARS, len(self._scanner.pattern))
        if not name:
            char = self._scanner.peek()
            raise self.error(
                f"expecting a rule name (letters, digits, '-'), found {char!r}{self._hint()}", self._scanner.pos
            )
        return name

    def _hint(self) -> str:
        """At the start of a line after a rule, a symbol is most likely meant to continue that rule."""
        return f" ({_CONTINUATION_HINT})" if self.rules else ""

    def _alternatives(self, depth: int) -> ir.Expr:
        nested = depth > 0
        options = [self._sequence(depth, nested)]
        while self._scanner.take_if("|"):
            self._space(newlines=True)
            options.append(self._sequence(depth, nested))
        return ir.alt(*options)

    def _sequence(self, depth: int, nested: bool) -> ir.Expr:
        """Symbols up to a `|`, `)`, the end of the rule or of the text."""
        scanner = self._scanner
        items: list[ir.Expr] = []
        num_ops = 0  # postfix operators on the last symbol
        while True:
            start = scanner.pos
            char = scanner.peek()
            if char in _REPEAT_OPS or char == "{":
                if not items:
                    raise self.error(f"{char!r} needs a symbol before it", start)
                num_ops += 1
                if num_ops > MAX_NESTING:
                    raise self.error(f"more than {MAX_NESTING} repetition operators on one symbol", start)
                low, high = self._repetition()
                items[-1] = ir.repeat(items[-1], low, high)
            elif char and char in "<!":
                raise self.error(
                    "token syntax (<...>, !<...>, <[id]>) matches model tokens, not text: not supported", start
                )
            else:
                item = self._symbol(depth)
                if item is None:
                    return ir.seq(*items)
                items.append(item)
                num_ops = 0
            self._space(newlines=nested)

    def _symbol(self, depth: int) -> ir.Expr | None:
        """One symbol (without its postfix operators), or None where none starts."""
        scanner = self._scanner
        start = scanner.pos
        char = scanner.peek()
        if char == '"':
            return self._literal()
        if char == "[":
            return self._class()
        if char == ".":
            scanner.take()
            return self._lexeme(ANY_CHAR, ".")
        if char == "(":
            if depth >= MAX_NESTING:
                raise self.error(f"groups nested deeper than {MAX_NESTING} levels", start)
            scanner.take()
            self._space(newlines=True)
            inner = self._alternatives(depth + 1)
            if not scanner.take_if(")"):
                if not scanner.peek():
                    raise self.error("unclosed '('", start)
                raise self.error(f"unexpected {scanner.peek()!r} inside a group", scanner.pos)
            return inner
        if char and char in _NAME_CHARS:
            name = self._name()
            self.references.setdefault(name, start)
            return ir.ref(name)
        return None

    def _repetition(self) -> tuple[int, int | None]:
        """The counts of the postfix operator under the cursor: `*`, `+`, `?`, `{m}`, `{m,}`, `{m,n}`."""
        scanner = self._scanner
        start = scanner.pos
        op = scanner.take()
        if op in _REPEAT_OPS:
            return _REPEAT_OPS[op]
        self._space(newlines=False)
        low = self._count()
        self._space(newlines=False)
        high: int | None = low
        if scanner.take_if(","):
            self._space(newlines=False)
            high = None if scanner.peek() == "}" else self._count()
            self._space(newlines=False)
        if not scanner.take_if("}"):
            raise self.error("expecting '}' to close the repetition", scanner.pos)
        if high is not None and high < low:
            raise self.error(f"bad repetition {{{low},{high}}}: the maximum is below the minimum", start)
        return low, high

    def _count(self) -> int:
        digits = self._scanner.take_while(string.digits, len(self._scanner.pattern))
        if not digits:
            raise self.error("expecting a count in the repetition", self._scanner.pos)
        return int(digits)

    def _space(self, *, newlines: bool) -> None:
        """Skip blanks and comments, and line breaks when `newlines`."""
        scanner = self._scanner
        while True:
            char = scanner.peek()
            if char == "#":
                while scanner.peek() not in ("", "\r", "\n"):
                    scanner.take()
            elif char in (" ", "\t") or (newlines and char in ("\r", "\n")):
                scanner.take()
            else:
                return

    # ------------------------------------------------------------------------------------------
    # Characters
    # ------------------------------------------------------------------------------------------
    def _lexeme(self, chars: CharSet, name: str = "") -> ir.Expr:
        """The one-character lexeme of `chars` (shared by equal sets)."""
        found = self._lexemes.get(chars)
        if found is None:
            found = self._lexemes[chars] = ir.lex(utf8_term(chars), name or repr(chars))
        return found

    def _literal(self) -> ir.Expr:
        scanner = self._scanner
        start = scanner.pos
        scanner.take()
        items = []
        while not scanner.take_if('"'):
            if not scanner.peek():
                raise self.error("unterminated string literal", start)
            char_start = scanner.pos
            code = self._char()
            if 0xD800 <= code <= 0xDFFF:
                raise self.error(f"U+{code:04X} is a surrogate, which no UTF-8 text holds", char_start)
            items.append(self._lexeme(CharSet.range(code, code), repr(chr(code))))
        return ir.seq(*items)

    def _class(self) -> ir.Expr:
        scanner = self._scanner
        start = scanner.pos
        scanner.take()
        is_negated = scanner.take_if("^")
        ranges: list[tuple[int, int]] = []
        while not scanner.take_if("]"):
            if not scanner.peek():
                raise self.error("unterminated character class", start)
            item_start = scanner.pos
            low = high = self._char()
            if scanner.peek() == "-" and scanner.peek(1) not in ("]", ""):
                scanner.take()
                high = self._char()
                if high < low:
                    raise self.error(f"bad character range {scanner.pattern[item_start : scanner.pos]}", item_start)
            ranges.append((low, high))
        if not ranges:
            raise self.error("empty character class", start)
        chars = CharSet(tuple(ranges))  # surrogates are cut: no UTF-8 text holds them
        return self._lexeme(~chars if is_negated else chars, scanner.pattern[start : scanner.pos])

    def _char(self) -> int:
        """One character of a literal or class, escapes resolved, as a code point."""
        scanner = self._scanner
        start = scanner.pos
        char = scanner.take()
        if char != "\\":
            return ord(char)
        escape = scanner.take()
        if not escape:
            raise self.error("a backslash ends the text", start)
        if escape in _SIMPLE_ESCAPES:
            return ord(_SIMPLE_ESCAPES[escape])
        num_digits = _HEX_ESCAPES.get(escape)
        if num_digits is None:
            known = '\\n \\r \\t \\\\ \\" \\[ \\] \\- \\xHH \\uHHHH \\UHHHHHHHH'
            raise self.error(f"unknown escape \\{escape} (GBNF knows {known})", start)
        digits = scanner.take_while(_HEX, num_digits)
        if len(digits) != num_digits:
            raise self.error(f"\\{escape} needs {num_digits} hex digits", start)
        code = int(digits, 16)
        if code > 0x10FFFF:
            raise self.error(f"\\{escape}{digits} is beyond the last code point U+10FFFF", start)
        return code
