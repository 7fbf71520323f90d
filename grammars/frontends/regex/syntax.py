"""Regex text -> the character-level AST (`grammars.frontends.regex.ast`) -> a byte-level term.

Two flavors share one parser: "python" (Python `re` for str patterns: Lark terminals, `grammars.Regex`)
and "ecmascript" (JSON Schema `pattern`, `patternProperties`, `format`). Character-level syntax
(escapes, classes, `\\p{..}`) lives in `grammars.frontends.regex.charclass`; this module parses structure
(groups, alternation, quantifiers, anchors, inline flags). `grammars.frontends.regex.lowering` turns the AST
into a term (`lower`, `search_form`, re-exported here), and `regex_term` does it all for raw text.

Only the *language* of a pattern matters to a constraint engine, so capturing groups are plain groups
and the lowering reads lazy quantifiers as greedy ones. The parser reads the whole syntax, including
lazy quantifiers, lookbehinds and `\\b`, which the Lark front end gives `re`'s meaning
(`grammars.frontends.lark.nodes`) and the lowering refuses. What cannot be a regular language
(backreferences, conditionals) or is not worth the states (atomic groups, possessive quantifiers) is
refused here, with a located `GrammarSyntaxError`.
"""

from __future__ import annotations

import functools
import re

from grammars.core import byte_regex as rx
from grammars.core.charset import CharSet, utf8_term
from grammars.errors import GrammarError
from grammars.frontends.regex.ast import (
    Alternation,
    CharClass,
    Concat,
    EndAnchor,
    Group,
    Lookahead,
    Lookbehind,
    Node,
    Repetition,
    StartAnchor,
    WordBoundary,
)
from grammars.frontends.regex.charclass import (
    Anchor,
    Flags,
    Flavor,
    Scanner,
    dot_class,
    fold,
    parse_class,
    parse_escape,
    shorthand_class,
)
from grammars.frontends.regex.lowering import lower, open_end, search_form

__all__ = [
    "Alternation",
    "CharClass",
    "Concat",
    "EndAnchor",
    "Flavor",
    "Group",
    "Lookahead",
    "Lookbehind",
    "Node",
    "Repetition",
    "StartAnchor",
    "WordBoundary",
    "lower",
    "parse_regex",
    "regex_term",
    "search_form",
]

#: Python refuses counts at or above 2**32 - 1 (its MAXREPEAT); ECMAScript has no bound.
MAX_PYTHON_REPEAT = 2**32 - 2
#: Group nesting beyond this is refused (the parser and the lowering recurse per level).
MAX_NESTING = 100

_QUANTIFIER_BRACES = re.compile(r"\{([0-9]*)(,([0-9]*))?\}")
_FLAG_LETTERS = {"python": "aiLmsux", "ecmascript": "ims"}
_FLAG_NAMES = {"i": "ignore_case", "s": "dotall", "m": "multiline", "x": "verbose", "a": "ascii"}


@functools.lru_cache(maxsize=4096)
def _char_node(code: int, ignore_case: bool, ascii_only: bool) -> CharClass:
    """The node of one literal character (shared: patterns are mostly literals)."""
    return CharClass(fold(CharSet.range(code, code), Flags(ignore_case=ignore_case, ascii=ascii_only)))


class _Parser:
    def __init__(self, pattern: str, flavor: Flavor, flags: Flags) -> None:
        self.scanner = Scanner(pattern, flavor)
        self.flavor = flavor
        self.flags = flags
        self.group_names: set[str] = set()

    def parse(self) -> Node:
        node = self._alternation(depth=0)
        if self.scanner.peek():
            raise self.scanner.error("unbalanced parenthesis")
        return node

    def _alternation(self, depth: int) -> Node:
        options = [self._sequence(depth, is_first=True)]
        while self.scanner.take_if("|"):
            options.append(self._sequence(depth, is_first=False))
        return options[0] if len(options) == 1 else Alternation(tuple(options))

    def _sequence(self, depth: int, is_first: bool) -> Node:
        scanner = self.scanner
        pattern = scanner.pattern
        items: list[Node] = []
        is_quantified = False
        while scanner.pos < len(pattern) and pattern[scanner.pos] not in "|)":
            if self.flags.verbose and self._skip_verbose_filler():
                continue
            start = scanner.pos
            bounds = self._quantifier() if pattern[start] in "*+?{" else None
            if bounds is not None:
                if not items or isinstance(items[-1], (StartAnchor, EndAnchor, WordBoundary)):
                    raise scanner.error("nothing to repeat", start)
                if is_quantified:
                    raise scanner.error("multiple repeat", start)
                if scanner.take_if("+"):
                    raise scanner.error("possessive quantifiers are not supported", start)
                items[-1] = Repetition(items[-1], *bounds, is_lazy=scanner.take_if("?"))
                is_quantified = True
                continue
            node = self._atom(depth, at_pattern_start=depth == 0 and is_first and not items)
            if node is not None:
                items.append(node)
                is_quantified = False
        return items[0] if len(items) == 1 else Concat(tuple(items))

    def _skip_verbose_filler(self) -> bool:
        """Skip whitespace or a `#` comment under the `x` flag; whether anything was skipped."""
        scanner = self.scanner
        if scanner.peek() in " \t\n\r\v\f":
            scanner.take()
            return True
        if scanner.peek() == "#":
            end = scanner.pattern.find("\n", scanner.pos)
            scanner.pos = len(scanner.pattern) if end < 0 else end + 1
            return True
        return False

    def _quantifier(self) -> tuple[int, int | None] | None:
        """Consume a quantifier and return its bounds, or None when none starts here (`{` literal)."""
        scanner = self.scanner
        char = scanner.peek()
        if char in ("*", "+", "?"):
            scanner.take()
            return {"*": (0, None), "+": (1, None), "?": (0, 1)}[char]
        if char != "{":
            return None
        match = _QUANTIFIER_BRACES.match(scanner.pattern, scanner.pos)
        if match is None or (not match.group(1) and (self.flavor == "ecmascript" or not match.group(2))):
            return None
        start = scanner.pos
        scanner.pos = match.end()
        lo = int(match.group(1) or 0)
        hi = (int(match.group(3)) if match.group(3) else None) if match.group(2) else lo
        if self.flavor == "python" and max(lo, hi or 0) > MAX_PYTHON_REPEAT:
            raise scanner.error("the repetition number is too large", start)
        if hi is not None and hi < lo:
            raise scanner.error("min repeat greater than max repeat", start)
        return lo, hi

    def _atom(self, depth: int, at_pattern_start: bool) -> Node | None:
        scanner = self.scanner
        start = scanner.pos
        char = scanner.peek()
        if char == "(":
            return self._group(depth, at_pattern_start)
        if char == "[":
            return CharClass(parse_class(scanner, self.flags))
        if char == "\\":
            escaped = parse_escape(scanner, self.flags, in_class=False)
            if isinstance(escaped, Anchor):
                return self._anchor(escaped, start)
            if isinstance(escaped, int):
                return _char_node(escaped, self.flags.ignore_case, self.flags.ascii)
            return CharClass(escaped)
        scanner.take()
        if char == ".":
            return CharClass(dot_class(self.flavor, self.flags.dotall))
        if char in ("^", "$"):
            if self.flags.multiline:
                raise scanner.error(f"multiline anchors ({char} under the m flag) are not supported", start)
            if char == "^":
                return StartAnchor(start, scanner.pattern)
            return EndAnchor(self.flavor == "python", start, scanner.pattern)
        return _char_node(ord(char), self.flags.ignore_case, self.flags.ascii)

    def _anchor(self, anchor: Anchor, start: int) -> Node:
        source = self.scanner.pattern
        if anchor is Anchor.START:
            return StartAnchor(start, source)
        if anchor is Anchor.END:
            return EndAnchor(False, start, source)
        word = shorthand_class("w", self.flavor, self.flags.ascii)
        return WordBoundary(anchor is Anchor.NOT_WORD_BOUNDARY, word, start, source)

    def _group(self, depth: int, at_pattern_start: bool) -> Node | None:
        """A parenthesized group, or None for a comment `(?#...)` or leading global flags `(?i)`."""
        scanner = self.scanner
        start = scanner.pos
        if depth >= MAX_NESTING:
            raise scanner.error(f"groups nested deeper than {MAX_NESTING} levels", start)
        scanner.take()
        saved_flags = self.flags
        is_behind: bool | None = None  # None: not a lookaround
        is_negative = False
        if scanner.take_if("?"):
            if scanner.pattern.startswith(("=", "!", "<=", "<!"), scanner.pos):
                is_behind = scanner.take_if("<")
                is_negative = scanner.take() == "!"
            elif self._group_extension(start, at_pattern_start):
                return None
        inner = self._alternation(depth + 1)
        if not scanner.take_if(")"):
            raise scanner.error("missing ), unterminated subpattern", start)
        self.flags = saved_flags
        if is_behind:
            return Lookbehind(inner, is_negative, start, scanner.pattern)
        if is_behind is False:  # the body reads on to the end of the string unless it ends in `$`
            return Lookahead(open_end(inner, at_front=False), is_negative, start, scanner.pattern)
        return Group(inner)

    def _group_extension(self, start: int, at_pattern_start: bool) -> bool:
        """Handle what follows `(?`; True when the whole group was consumed (comment, global flags)."""
        scanner = self.scanner
        unsupported = {
            ">": "atomic groups",
            "(": "conditional groups",
            "P=": "backreferences",
            "P>": "recursive patterns",
        }
        for prefix, what in unsupported.items():
            if scanner.pattern.startswith(prefix, scanner.pos):
                raise scanner.error(f"{what} are not supported", start)
        if scanner.take_if(":"):
            return False
        if scanner.take_if("P<") or scanner.take_if("<"):
            self._group_name(start)
            return False
        if self.flavor == "python" and scanner.take_if("#"):
            end = scanner.pattern.find(")", scanner.pos)
            if end < 0:
                raise scanner.error("missing ), unterminated comment", start)
            scanner.pos = end + 1
            return True
        if scanner.peek() and scanner.peek() in _FLAG_LETTERS[self.flavor] + "-":
            return self._inline_flags(start, at_pattern_start)
        if not scanner.peek():
            raise scanner.error("unexpected end of pattern", start)
        raise scanner.error(f"unknown extension ?{scanner.peek()}", start)

    def _group_name(self, start: int) -> None:
        scanner = self.scanner
        end = scanner.pattern.find(">", scanner.pos)
        name = scanner.pattern[scanner.pos : end] if end >= 0 else ""
        if not name.isidentifier():
            raise scanner.error(f"bad group name {name!r}", start)
        if self.flavor == "python" and name in self.group_names:
            raise scanner.error(f"redefinition of group name {name!r}", start)
        self.group_names.add(name)
        scanner.pos = end + 1

    def _inline_flags(self, start: int, at_pattern_start: bool) -> bool:
        """`(?imsx-imsx:...)` scoped flags, or Python's global `(?aiLmsux)` at the pattern start."""
        scanner = self.scanner
        letters = _FLAG_LETTERS[self.flavor]
        added = scanner.take_while(letters, len(letters))
        removed = scanner.take_while("imsx" if self.flavor == "python" else letters, 4) if scanner.take_if("-") else ""
        if "L" in added:
            raise scanner.error("the L (locale) flag cannot be used with a str pattern", start)
        is_repeated = self.flavor == "ecmascript" and len(set(added + removed)) < len(added + removed)
        if ("a" in added and "u" in added) or set(added) & set(removed) or is_repeated:
            raise scanner.error("bad inline flags", start)
        if scanner.take_if(")"):
            if self.flavor != "python" or removed or not added:
                raise scanner.error("inline flags need a scope in this flavor: (?i:...)", start)
            if not at_pattern_start:
                raise scanner.error("global flags not at the start of the expression", start)
            self.flags = self._with_flags(added, "")
            return True
        if not scanner.take_if(":") or not (added or removed):
            bad = scanner.peek()
            raise scanner.error(f"bad inline flag {bad!r}" if bad.isalpha() else "bad inline flags", start)
        self.flags = self._with_flags(added, removed)
        return False

    def _with_flags(self, added: str, removed: str) -> Flags:
        values = {name: getattr(self.flags, name) for name in _FLAG_NAMES.values()}
        values.update({_FLAG_NAMES[c]: True for c in added if c in _FLAG_NAMES})
        values.update({_FLAG_NAMES[c]: False for c in removed})
        return Flags(**values)


@functools.lru_cache(maxsize=1024)
def parse_regex(
    pattern: str,
    *,
    flavor: Flavor = "python",
    ignore_case: bool = False,
    dotall: bool = False,
    multiline: bool = False,
    verbose: bool = False,
) -> Node:
    """Parse regex text into the character-level AST (cached: the AST is immutable).

    Args:
        pattern: the regex text.
        flavor: "python" (Python `re`, str patterns) or "ecmascript" (JSON Schema).
        ignore_case: the `i` flag for the whole pattern (Python's equivalences, see `charset.case_fold`).
        dotall: the `s` flag: `.` also matches line terminators.
        multiline: the `m` flag (then `^` and `$` are refused: they would read outside the match).
        verbose: the `x` flag: whitespace and `#` comments outside classes are not part of the pattern.

    Returns:
        the AST; anchors, lookarounds and word boundaries stay as nodes (see `lower`, `search_form`).

    Raises:
        GrammarSyntaxError: bad syntax, or a construct Stencil cannot enforce (backreferences, atomic
            groups, possessive quantifiers, conditionals, multiline anchors), with the offset of the
            construct.
        GrammarError: an unknown flavor, or a pattern that is not a str.
    """
    if flavor not in _FLAG_LETTERS:
        raise GrammarError(f"unknown regex flavor {flavor!r} (expected 'python' or 'ecmascript')")
    if not isinstance(pattern, str):
        raise GrammarError(f"a regex pattern must be str, not {type(pattern).__name__}")
    flags = Flags(ignore_case=ignore_case, dotall=dotall, multiline=multiline, verbose=verbose)
    return _Parser(pattern, flavor, flags).parse()


@functools.lru_cache(maxsize=1024)
def regex_term(
    pattern: str, *, flavor: Flavor = "python", search: bool = False, ignore_case: bool = False, dotall: bool = False
) -> rx.Term:
    """The byte-level term of regex text over UTF-8 (parse, `search_form` if `search`, lower). Cached.

    Args:
        pattern, flavor, ignore_case, dotall: as for `parse_regex`.
        search: False: the whole string must match (fullmatch). True: a match anywhere suffices.

    Raises:
        GrammarSyntaxError, GrammarError: as `parse_regex` and `lower` (which refuses lookbehinds and
            word boundaries).
    """
    node = parse_regex(pattern, flavor=flavor, ignore_case=ignore_case, dotall=dotall)
    return lower(search_form(node) if search else node, utf8_term)
