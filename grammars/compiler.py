"""`compile()`: any constraint specification to a `Constraint`, cached in memory by specification.

Front ends turn the specification into the grammar IR; the automaton (`grammars.core.automaton`) is built
once per grammar; per-vocabulary mask tables are built on first `matcher(vocab)` and shared by every
matcher of that vocabulary.

There is no disk cache: a process compiles each specification once (median 3 ms of front-end work
over the schema corpus, about 1 s at worst), far less than loading the vocabulary and building the
first mask, and a cache directory others can write to would let them run code or widen a language.
"""

from __future__ import annotations

import itertools
import marshal
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, NamedTuple

from grammars.core import byte_regex as rx
from grammars.core import ir
from grammars.core.automaton import GrammarAutomaton
from grammars.core.budget import Budget, Check
from grammars.errors import ConstraintLimitError, GrammarError
from grammars.masking.masks import MaskTable
from grammars.masking.matcher import Matcher
from grammars.masking.vocab import Vocabulary
from grammars.specs import GBNF, Choice, Lark, Regex, Schema

#: Compiled constraints kept in memory.
MAX_CACHED_CONSTRAINTS = 128
#: Containers (dicts, lists, tuples) nested deeper than this make a specification absurd; about
#: marshal's own bound, so that whether marshal can write a specification never decides its fate.
MAX_SPEC_NESTING = 2_000
WHITESPACE_POLICIES = ("flexible", "compact", "spaced")
#: Characters of a specification a constraint's description shows.
MAX_SUMMARY_CHARS = 60


#: Wall-clock seconds `Constraint.accepts` may spend on new lexer states.
MAX_ACCEPTS_SECONDS = 10.0


class Constraint:
    """A compiled constraint: its language (`accepts`) and per-vocabulary matchers.

    Args:
        grammar: the grammar IR (see `grammars.core.ir`).
        description: a short text for messages and reprs.
        budget: the compile deadline (default: a fresh `Budget()`).
    Raises:
        EmptyLanguageError, GrammarError, ConstraintLimitError: the grammar cannot be compiled.
    """

    def __init__(self, grammar: ir.Grammar, description: str = "grammar", *, budget: Budget | None = None) -> None:
        self.grammar = grammar
        self.description = description
        self.automaton = GrammarAutomaton(grammar, budget=budget)
        self._tables: dict[str, MaskTable] = {}
        self._lock = threading.Lock()

    def accepts(self, text: str | bytes) -> bool:
        """Whether the whole of `text` (UTF-8 when a str) is a sentence of the constraint's language.

        Raises:
            ConstraintLimitError: the check ran past MAX_ACCEPTS_SECONDS (a grammar whose lexer states
                each cost seconds, e.g. thousands of stacked optional items).
        """
        budget = Budget(MAX_ACCEPTS_SECONDS, what="checking a text against the constraint")
        # A lone surrogate encodes to bytes that are not UTF-8, which no constraint's language holds.
        data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
        return self.automaton.accepts(data, budget.check)

    def matcher(self, vocab: Vocabulary) -> Matcher:
        """A fresh matcher for one sequence over `vocab`.

        A constraint that served so many generations that its parser state is worn (see
        `GrammarAutomaton.is_worn`) starts new matchers on a rebuilt automaton; live ones keep theirs.
        """
        if self.automaton.is_worn:
            with self._lock:
                if self.automaton.is_worn:
                    self.automaton = GrammarAutomaton(self.grammar)
                    self._tables = {}
        table = self._tables.get(vocab.fingerprint)
        if table is None:
            with self._lock:
                table = self._tables.setdefault(vocab.fingerprint, MaskTable(self.automaton, vocab))
        return Matcher(table)

    def __repr__(self) -> str:
        return f"Constraint({self.description})"


def compile_grammar(grammar: ir.Grammar, description: str = "grammar") -> Constraint:
    """A constraint for an IR grammar (front ends and tests)."""
    return Constraint(grammar, description)


_cache: OrderedDict[tuple[Any, ...], Constraint] = OrderedDict()
_cache_lock = threading.Lock()


def compile(
    spec: Any,
    *,
    lenient: bool = False,
    whitespace: str = "flexible",
    indent: int | None = None,
    resources: Mapping[str, Any] | None = None,
    cache: bool = True,
) -> Constraint:
    """Compile a constraint specification.

    Args:
        spec: a JSON Schema (dict or bool), a Pydantic model class or Python type, `Regex`, `Lark`,
            `GBNF`, `Choice`, or `Schema` (a JSON Schema with its options, which it carries itself).
        lenient: JSON Schema keywords Stencil cannot enforce warn instead of raising.
        whitespace: JSON text policy: "flexible" (at most one space after `,` and `:`), "compact"
            (none) or "spaced" (exactly one).
        indent: JSON pretty-printed with this indent (overrides `whitespace`).
        resources: schema documents that remote `$ref`s may use, by absolute URI (never fetched);
            JSON Schemas and types only.
        cache: look up and store the result in the in-memory cache (False: compile afresh, e.g. to
            measure compile time).
    Returns:
        A `Constraint`; with `cache`, the same specification and options give the same object (for
        specifications and resources of plain dicts, lists, tuples, strings, numbers, booleans and
        None; others are compiled afresh).
    Raises:
        GrammarSyntaxError: bad regex or grammar text (with its position).
        UnsupportedSchemaError: a schema keyword that cannot be enforced (unless lenient).
        ConstraintLimitError: also for containers nested deeper than MAX_SPEC_NESTING (or a cycle).
        GrammarError: also for options given both to a `Schema` and to `compile`, schema options
            (`lenient`, `whitespace`, `indent`, `resources`) with a specification that is not a schema,
            or `resources` that is not a mapping of str keys.
        SchemaError, EmptyLanguageError.
    """
    if isinstance(spec, Schema):
        if (lenient, whitespace, indent, resources) != (False, "flexible", None, None):
            raise GrammarError(
                "a Schema carries its own options: give lenient, whitespace, indent and resources to Schema, "
                "not to compile"
            )
        return compile(
            spec.schema,
            lenient=spec.lenient,
            whitespace=spec.whitespace,
            indent=spec.indent,
            resources=spec.resources,
            cache=cache,
        )
    if whitespace not in WHITESPACE_POLICIES:
        raise GrammarError(f"unknown whitespace policy {whitespace!r}; use one of {WHITESPACE_POLICIES}")
    kind, payload = _describe(spec)
    if kind != "schema" and (lenient, whitespace, indent) != (False, "flexible", None):
        raise GrammarError(
            f"lenient, whitespace and indent apply to JSON Schemas and types, not to a {kind} specification"
        )
    documents = _resources(kind, resources)
    options = _Options(lenient, whitespace, indent, documents)
    key = _cache_key(kind, payload, options)  # also when not caching: it bounds nesting
    if key is None or not cache:
        return _compile(kind, payload, options)
    with _cache_lock:
        found = _cache.get(key)
        if found is not None:
            _cache.move_to_end(key)
            return found
    constraint = _compile(kind, payload, options)
    with _cache_lock:
        _cache[key] = constraint
        while len(_cache) > MAX_CACHED_CONSTRAINTS:
            _cache.popitem(last=False)
    return constraint


class _Options(NamedTuple):
    """The compile options, checked; `resources` as a plain dict, None when there are none."""

    lenient: bool
    whitespace: str
    indent: int | None
    resources: dict[str, Any] | None


def _describe(spec: Any) -> tuple[str, Any]:
    """(kind, JSON-able payload) of a specification; Python types become their JSON Schema. A Lark
    grammar's import directories are made absolute, so that its cache key names the files it reads."""
    if isinstance(spec, Regex):
        return "regex", [spec.pattern, spec.flavor]
    if isinstance(spec, Lark):
        return "lark", [spec.text, spec.start, [os.path.abspath(path) for path in spec.import_paths]]
    if isinstance(spec, GBNF):
        return "gbnf", [spec.text, spec.start]
    if isinstance(spec, Choice):
        return "choice", list(spec.options)
    if isinstance(spec, (dict, bool)):
        return "schema", spec
    if isinstance(spec, (str, bytes, int, float, list, tuple, set, frozenset)):
        # Values, not types: a string is no type name here, and a list no schema.
        raise GrammarError(
            f"a constraint specification is a JSON Schema dict or bool, a Python type, or a Regex, Lark, "
            f"GBNF, Choice or Schema; not a {type(spec).__name__}"
        )
    from grammars.frontends.types import type_schema

    return "schema", type_schema(spec)


def _resources(kind: str, resources: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """`resources` as a plain dict (None when empty).

    Raises:
        GrammarError: not a mapping with str keys, or given with a specification that is not a schema.
    """
    if not resources:
        return None
    if not isinstance(resources, Mapping) or not all(isinstance(uri, str) for uri in resources):
        raise GrammarError("resources is a mapping of absolute URI (str) to schema document")
    if kind != "schema":
        raise GrammarError(f"resources apply to JSON Schemas and types, not to a {kind} specification")
    return dict(resources)


def _compile(kind: str, payload: Any, options: _Options) -> Constraint:
    """Front end and core under one compile deadline (MAX_COMPILE_SECONDS from the start)."""
    budget = Budget()
    grammar = _grammar(kind, payload, options, check=budget.check)
    return Constraint(grammar, _summary(kind, payload), budget=budget)


def _grammar(kind: str, payload: Any, options: _Options, *, check: Check) -> ir.Grammar:
    rules = ir.RuleSet()
    if kind == "regex":
        from grammars.frontends.regex.syntax import regex_term

        return rules.grammar(ir.lex(regex_term(payload[0], flavor=payload[1]), "regex"))
    if kind == "choice":
        if not payload:
            raise GrammarError("Choice needs at least one option")
        return rules.grammar(ir.lex(rx.literals(o.encode("utf-8") for o in payload), "choice"))
    if kind == "lark":
        from grammars.frontends.lark.grammar import lark_grammar

        return lark_grammar(payload[0], start=payload[1], import_paths=payload[2], check=check)
    if kind == "gbnf":
        from grammars.frontends.gbnf.grammar import gbnf_grammar

        return gbnf_grammar(payload[0], start=payload[1], check=check)
    from grammars.frontends.json_schema import schema_grammar

    return schema_grammar(
        payload,
        lenient=options.lenient,
        whitespace=options.whitespace,
        indent=options.indent,
        resources=options.resources,
        check=check,
    )


class _Text(str):
    """Punctuation of a summary, told apart from the payload's own strings."""


def _summary(kind: str, payload: Any) -> str:
    """`kind` and the start of the payload's repr, written piece by piece until MAX_SUMMARY_CHARS are
    there: a schema of any size or depth (or a cycle) costs the same few pieces."""
    pieces: list[str] = []
    length = 0
    todo: list[Any] = [payload]
    while todo and length <= MAX_SUMMARY_CHARS:
        item = todo.pop()
        if isinstance(item, _Text):
            piece: str = item
        elif isinstance(item, (dict, list, tuple)):
            brackets = "{}" if isinstance(item, dict) else "[]" if isinstance(item, list) else "()"
            entries = itertools.islice(item.items() if isinstance(item, dict) else item, MAX_SUMMARY_CHARS)
            todo.append(_Text(",)" if isinstance(item, tuple) and len(item) == 1 else brackets[1]))
            for index, entry in reversed(list(enumerate(entries))):
                todo += [entry[1], _Text(f"{entry[0]!r}: ")] if isinstance(item, dict) else [entry]
                if index:
                    todo.append(_Text(", "))
            piece = brackets[0]
        else:
            piece = repr(item[: MAX_SUMMARY_CHARS + 1] if isinstance(item, (str, bytes)) else item)
        pieces.append(piece)
        length += len(piece)
    text = "".join(pieces)
    return f"{kind} {text[:MAX_SUMMARY_CHARS]}{'...' if todo or len(text) > MAX_SUMMARY_CHARS else ''}"


def _cache_key(kind: str, payload: Any, options: _Options) -> tuple[Any, ...] | None:
    """The in-memory cache key: the options, then the payload and the resources in marshal's version-2
    format, which has no back-references (equal values give equal bytes) and tells apart every value
    that could compile differently (`1`, `1.0` and `True`; lists and tuples; key order, which orders
    properties). Written in C with its own depth bound, so deep schemas cost no Python recursion. None
    (compile uncached) for a specification or resources holding values outside marshal's plain types.

    Raises:
        ConstraintLimitError: containers nested deeper than MAX_SPEC_NESTING, or a cycle.
    """
    try:
        return (
            kind,
            options.lenient,
            options.whitespace,
            options.indent,
            marshal.dumps(payload, 2),
            marshal.dumps(options.resources, 2),
        )
    except ValueError:  # nested too deep for marshal, or a value outside its types
        _check_nesting(payload)
        _check_nesting(options.resources)
        return None


def _check_nesting(payload: Any) -> None:
    """Refuse containers nested deeper than MAX_SPEC_NESTING (a cycle nests without end). Iterative,
    and each container is walked again only when met deeper, so shared subtrees cost no blow-up.

    Raises:
        ConstraintLimitError: the nesting is too deep.
    """
    deepest: dict[int, int] = {}  # container id -> the deepest nesting it was walked at
    todo: list[tuple[Any, int]] = [(payload, 1)]
    while todo:
        value, depth = todo.pop()
        if not isinstance(value, (dict, list, tuple)) or deepest.get(id(value), 0) >= depth:
            continue
        if depth > MAX_SPEC_NESTING:
            raise ConstraintLimitError(
                f"the specification nests containers deeper than {MAX_SPEC_NESTING} (or contains itself)"
            )
        deepest[id(value)] = depth
        todo += ((child, depth + 1) for child in (value.values() if isinstance(value, dict) else value))
