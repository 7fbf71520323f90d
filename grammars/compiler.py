"""`compile()`: any constraint specification to a `Constraint`, cached by specification.

Front ends turn the specification into the grammar IR; the automaton (`grammars.core.automaton`) is built
once per grammar; per-vocabulary mask tables are built on first `matcher(vocab)` and shared by every
matcher of that vocabulary.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pickle
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from grammars.core import byte_regex as rx
from grammars.core import ir
from grammars.core.automaton import GrammarAutomaton
from grammars.errors import GrammarError
from grammars.masking.masks import MaskTable
from grammars.masking.matcher import Matcher
from grammars.masking.vocab import Vocabulary
from grammars.specs import Choice, Lark, Regex

#: Compiled constraints kept in memory.
MAX_CACHED_CONSTRAINTS = 128
WHITESPACE_POLICIES = ("flexible", "compact", "spaced")


class Constraint:
    """A compiled constraint: its language (`accepts`) and per-vocabulary matchers.

    Args:
        grammar: the grammar IR (see `grammars.core.ir`).
        description: a short text for messages and reprs.
    Raises:
        EmptyLanguageError, GrammarError, ConstraintLimitError: the grammar cannot be compiled.
    """

    def __init__(self, grammar: ir.Grammar, description: str = "grammar") -> None:
        self.grammar = grammar
        self.description = description
        self.automaton = GrammarAutomaton(grammar)
        self._tables: dict[str, MaskTable] = {}
        self._lock = threading.Lock()

    def accepts(self, text: str | bytes) -> bool:
        """Whether the whole of `text` (UTF-8 when a str) is a sentence of the constraint's language."""
        return self.automaton.accepts(text.encode("utf-8") if isinstance(text, str) else text)

    def matcher(self, vocab: Vocabulary) -> Matcher:
        """A fresh matcher for one sequence over `vocab`."""
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


_cache: OrderedDict[str, Constraint] = OrderedDict()
_cache_lock = threading.Lock()


def compile(
    spec: Any, *, lenient: bool = False, whitespace: str = "flexible", indent: int | None = None, cache: bool = True
) -> Constraint:
    """Compile a constraint specification.

    Args:
        spec: a JSON Schema (dict or bool), a Pydantic model class or Python type, `Regex`, `Lark`
            or `Choice`.
        lenient: JSON Schema keywords Stencil cannot enforce warn instead of raising.
        whitespace: JSON text policy: "flexible" (at most one space after `,` and `:`), "compact"
            (none) or "spaced" (exactly one).
        indent: JSON pretty-printed with this indent (overrides `whitespace`).
        cache: look up and store the result in the memory and disk caches (False: compile afresh,
            e.g. to measure compile time).
    Returns:
        A `Constraint`; with `cache`, the same specification and options give the same object.
    Raises:
        GrammarSyntaxError: bad regex or grammar text (with its position).
        UnsupportedSchemaError: a schema keyword that cannot be enforced (unless lenient).
        SchemaError, EmptyLanguageError, ConstraintLimitError, GrammarError.
    """
    if whitespace not in WHITESPACE_POLICIES:
        raise GrammarError(f"unknown whitespace policy {whitespace!r}; use one of {WHITESPACE_POLICIES}")
    kind, payload = _describe(spec)
    key = hashlib.sha256(
        json.dumps([kind, payload, lenient, whitespace, indent], sort_keys=False, default=str).encode()
    ).hexdigest()
    if not cache:
        return Constraint(
            _grammar(kind, payload, lenient=lenient, whitespace=whitespace, indent=indent), _summary(kind, payload)
        )
    with _cache_lock:
        found = _cache.get(key)
        if found is not None:
            _cache.move_to_end(key)
            return found
    grammar = _load_cached_grammar(key)
    if grammar is None:
        grammar = _grammar(kind, payload, lenient=lenient, whitespace=whitespace, indent=indent)
        _store_cached_grammar(key, grammar)
    constraint = Constraint(grammar, _summary(kind, payload))
    with _cache_lock:
        _cache[key] = constraint
        while len(_cache) > MAX_CACHED_CONSTRAINTS:
            _cache.popitem(last=False)
    return constraint


def cache_dir() -> Path | None:
    """Where compiled grammars are kept between processes: `$STENCIL_CACHE_DIR` (empty: no disk
    cache), else ~/.cache/stencil. Grammars do not depend on the vocabulary, so one entry serves
    every model; masks are per vocabulary and kept in memory."""
    configured = os.environ.get("STENCIL_CACHE_DIR")
    if configured == "":
        return None
    return Path(configured) if configured else Path.home() / ".cache" / "stencil"


def _cache_file(key: str) -> Path | None:
    root = cache_dir()
    return None if root is None else root / f"grammars-{_source_fingerprint()}" / f"{key}.pickle"


@functools.cache
def _source_fingerprint() -> str:
    """A hash of this package's source: an entry written by another version of the compiler (which
    may build a different grammar from the same specification) is never read."""
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*")):
        if path.suffix in (".py", ".lark"):
            digest.update(path.relative_to(package).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _load_cached_grammar(key: str) -> ir.Grammar | None:
    path = _cache_file(key)
    if path is None or not path.is_file():
        return None
    try:
        with path.open("rb") as handle:
            grammar = pickle.load(handle)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError):
        return None  # a stale or torn entry is rebuilt and overwritten
    return grammar if isinstance(grammar, ir.Grammar) else None


def _store_cached_grammar(key: str, grammar: ir.Grammar) -> None:
    path = _cache_file(key)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("wb", dir=path.parent, delete=False) as handle:
            pickle.dump(grammar, handle, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(handle.name, path)  # atomic: concurrent processes never read half an entry
    except (OSError, pickle.PicklingError, RecursionError):
        return  # the disk cache is an optimization; a read-only home must not break compiling


def _describe(spec: Any) -> tuple[str, Any]:
    """(kind, JSON-able payload) of a specification; Python types become their JSON Schema."""
    if isinstance(spec, Regex):
        return "regex", [spec.pattern, spec.flavor]
    if isinstance(spec, Lark):
        return "lark", [spec.text, spec.start]
    if isinstance(spec, Choice):
        return "choice", list(spec.options)
    if isinstance(spec, (dict, bool)):
        return "schema", spec
    from grammars.frontends.types import type_schema

    return "schema", type_schema(spec)


def _grammar(kind: str, payload: Any, *, lenient: bool, whitespace: str, indent: int | None) -> ir.Grammar:
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

        return lark_grammar(payload[0], start=payload[1])
    from grammars.frontends.json_schema import schema_grammar

    return schema_grammar(payload, lenient=lenient, whitespace=whitespace, indent=indent)


def _summary(kind: str, payload: Any) -> str:
    text = json.dumps(payload, default=str)
    return f"{kind} {text[:60]}{'...' if len(text) > 60 else ''}"
