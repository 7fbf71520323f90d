"""`schema_grammar`: a JSON Schema to the grammar IR, through normalized DNFs.

    schema --(SchemaRegistry: $id, anchors, $ref)--> locations
    location --(keywords, applicators, combinators)--> DNF of typed alternatives
    Conj (a set of locations) --(one rule each, worklist)--> ir.Grammar

Children (property values, items) are `Conj`s compiled lazily from a worklist into one rule each,
memoized, so recursive schemas become recursive rules and nesting thousands deep costs no Python
recursion. Applicators (`$ref`, `allOf`, ...) are normalized eagerly; a chain of references that
are nothing but `$ref` is followed in a loop, and other nesting is bounded by MAX_NESTING.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

from grammars.core import byte_regex as rx
from grammars.core import ir
from grammars.core.budget import Check, no_check
from grammars.errors import (
    ConstraintLimitError,
    EmptyLanguageError,
    SchemaError,
    SchemaNestingError,
    UnsupportedSchemaError,
    UnsupportedSchemaWarning,
)
from grammars.frontends.json_schema import arrays, objects, readers, scalars
from grammars.frontends.json_schema.combinators import NotExact, if_then_else, intersect_dnf, negation, one_of
from grammars.frontends.json_schema.decide import SchemaCycle, value_in
from grammars.frontends.json_schema.emit import emit_dnf, literal_expr
from grammars.frontends.json_schema.keywords import IMPLEMENTED, keyword_problem
from grammars.frontends.json_schema.layout import MAX_INDENT_DEPTH, Layout
from grammars.frontends.json_schema.nodes import (
    DNF,
    FALSE,
    TOP,
    ArrT,
    BoolT,
    Conj,
    LitT,
    NullT,
    ObjT,
    Synth,
    Typed,
    Value,
    forbid,
    json_type,
    make_value,
    node_type,
    require,
)
from grammars.frontends.json_schema.refs import Dialect, Loc, SchemaRegistry
from grammars.frontends.json_schema.strings import LoneSurrogateError

#: Applicator nesting (allOf inside anyOf inside $ref ...) followed eagerly before giving up.
MAX_NESTING = 60
#: Containers nested inside one enum or const value (their comparison and emission recurse).
MAX_VALUE_NESTING = 100
#: Alternatives one schema may normalize to.
MAX_ALTERNATIVES = 512
#: Grammar rules one schema may produce.
MAX_RULES = 100_000
#: Values an enum may have.
MAX_ENUM_VALUES = 200_000

_TYPE_NODES: dict[str, Typed] = {"null": NullT(), "boolean": BoolT()}


class SchemaCompiler:
    """One compilation: the registry, the whitespace layout, the memo tables and the rules.

    Args:
        registry: the indexed documents.
        layout: the whitespace policy.
        lenient: report unsupported keywords as warnings instead of errors.
        check: the compile deadline (raises ConstraintLimitError once past it).
    """

    def __init__(self, registry: SchemaRegistry, layout: Layout, lenient: bool, check: Check = no_check) -> None:
        self.registry = registry
        self.layout = layout
        self.lenient = lenient
        self._rules = ir.RuleSet()
        self._dnf_of_loc: dict[Loc, DNF] = {}
        self._dnf_of_conj: dict[Conj, DNF] = {}
        self._in_progress: set[Loc] = set()
        self._nesting = 0
        self._rule_of: dict[tuple[Conj, int], ir.Expr] = {}
        self._pending: list[tuple[str, Conj, int]] = []
        self.proofs: dict = {}
        self.pruning = False
        self.check_deadline = check
        self.keys_may_run_out = False  # see ir.Grammar; objects that may run out set it

    # ------------------------------------------------------------------------------------------
    # Reporting and limits
    # ------------------------------------------------------------------------------------------
    def unsupported(self, keyword: str, loc: Loc | None, reason: str) -> None:
        """Raise UnsupportedSchemaError for `keyword`, or warn under lenient (then it is not enforced)."""
        pointer = "" if loc is None else loc.pointer
        if loc is not None and loc.doc != self.registry.root.doc:
            reason = f"{reason} (in {loc.doc})"
        error = UnsupportedSchemaError(keyword, pointer, reason)
        if not self.lenient:
            raise error
        warnings.warn(str(error), UnsupportedSchemaWarning, stacklevel=3)

    def check_alternatives(self, count: int) -> None:
        """Raises ConstraintLimitError past MAX_ALTERNATIVES or the compile deadline."""
        if count > MAX_ALTERNATIVES:
            raise ConstraintLimitError(f"a schema expands to more than {MAX_ALTERNATIVES} alternatives")
        self.check_deadline()

    # ------------------------------------------------------------------------------------------
    # Normalization
    # ------------------------------------------------------------------------------------------
    def normalize(self, conj: Conj) -> DNF:
        """The DNF of a conjunction of schema parts (memoized)."""
        found = self._dnf_of_conj.get(conj)
        if found is not None:
            return found
        result: DNF = TOP
        for part in sorted(conj, key=_part_order):
            result = intersect_dnf(result, part.alts if isinstance(part, Synth) else self.normalize_loc(part), self)
            if not result:
                break
        self._dnf_of_conj[conj] = result
        return result

    def normalize_loc(self, loc: Loc) -> DNF:
        """The DNF of the schema at `loc` (memoized).

        Raises:
            SchemaError, UnsupportedSchemaError, ConstraintLimitError, SchemaCycle.
        """
        found = self._dnf_of_loc.get(loc)
        if found is not None:
            return found
        chain = self._ref_chain(loc)
        target = chain[-1]
        found = self._dnf_of_loc.get(target)
        if found is not None:
            for member in chain:
                self._dnf_of_loc[member] = found
            return found
        if target in self._in_progress:
            raise SchemaCycle("the schema refers to itself without consuming input", target.pointer)
        if self._nesting >= MAX_NESTING:
            raise SchemaNestingError("applicators", MAX_NESTING, loc.pointer)
        self._in_progress.add(target)
        self._nesting += 1
        try:
            result = self._interpret(target)
        except RecursionError as exc:
            raise ConstraintLimitError(f"the schema nests too deep to compile (at {loc.pointer!r})") from exc
        finally:
            self._nesting -= 1
            self._in_progress.discard(target)
        for member in chain:
            self._dnf_of_loc[member] = result
        return result

    def _ref_chain(self, loc: Loc) -> list[Loc]:
        """`loc` followed through schemas that hold nothing but a `$ref` (iteratively: chains of
        thousands of references cost no recursion)."""
        chain = [loc]
        seen = {loc}
        while True:
            schema = self.registry.schema_at(chain[-1])
            if not isinstance(schema, dict) or "$ref" not in schema or chain[-1] in self._dnf_of_loc:
                return chain
            siblings_ignored = self.registry.dialect(chain[-1]) <= Dialect.DRAFT7
            if not siblings_ignored:
                if any(k in IMPLEMENTED and k not in _CONTAINERS for k in schema if k != "$ref"):
                    return chain
                self._check_keywords(schema, chain[-1])
            nxt = self.registry.resolve(schema["$ref"], chain[-1])
            if nxt in seen:
                raise SchemaCycle("a cycle of $ref that never reaches a schema", chain[-1].pointer)
            seen.add(nxt)
            chain.append(nxt)

    def _interpret(self, loc: Loc) -> DNF:
        schema = self.registry.schema_at(loc)
        if schema is True:
            return TOP
        if schema is False:
            return ()
        if not isinstance(schema, dict):
            raise SchemaError(f"a schema must be an object or a boolean, not {type(schema).__name__}", loc.pointer)
        self._check_keywords(schema, loc)
        dialect = self.registry.dialect(loc)
        alts = self._local(schema, loc, dialect)
        alts = self._applicators(schema, loc, alts)
        alts = self._unevaluated(schema, loc, alts)
        return self._literals(schema, loc, alts)

    def _check_keywords(self, schema: dict, loc: Loc) -> None:
        for keyword in schema:
            if not isinstance(keyword, str):
                raise SchemaError(f"keywords are strings, not {keyword!r}", loc.pointer)
            problem = keyword_problem(keyword)
            if problem is not None:
                self.unsupported(keyword, loc, problem)

    def _local(self, schema: dict, loc: Loc, dialect: Dialect) -> DNF:
        """The alternatives of `type` and the per-type keywords."""
        names = readers.types(schema, loc)
        wanted = {"null", "boolean", "number", "string", "array", "object"} if names is None else set(names)
        if "integer" in wanted:
            wanted.add("number")
        alts = [_TYPE_NODES[t] for t in ("null", "boolean") if t in wanted]
        if "number" in wanted:
            is_integer = names is not None and "integer" in names and "number" not in names
            number = scalars.number_node(schema, loc, dialect, is_integer, self)
            alts += [number] if number is not None else []
        if "string" in wanted:
            string = scalars.string_node(schema, loc, self, lambda name, at: scalars.format_content(name, at, self))
            alts += [string] if string is not None else []
        if "array" in wanted:
            alts.append(arrays.array_node(schema, loc, dialect))
        if "object" in wanted:
            alts.append(objects.object_node(schema, loc, dialect, self))
        return tuple(alts)

    def _applicators(self, schema: dict, loc: Loc, alts: DNF) -> DNF:
        if "$ref" in schema:
            alts = intersect_dnf(alts, self.normalize_loc(self.registry.resolve(schema["$ref"], loc)), self)
        for index in range(len(readers.schema_list(schema, "allOf", loc) or ())):
            alts = intersect_dnf(alts, self.normalize_loc(loc.child("allOf", index)), self)
        branches = readers.schema_list(schema, "anyOf", loc)
        if branches is not None:
            union = tuple(a for i in range(len(branches)) for a in self.normalize_loc(loc.child("anyOf", i)))
            alts = intersect_dnf(alts, union, self)
        # oneOf, not and if are decided within the alternatives so far (exactly one of B_i and S is
        # exactly one of (B_i and S) given S): fewer types to separate, fewer complements to build.
        branches = readers.schema_list(schema, "oneOf", loc)
        if branches is not None and alts:
            context = alts
            dnfs = [self.normalize_loc(loc.child("oneOf", i)) for i in range(len(branches))]
            alts = self._exactly(
                "oneOf", loc, lambda: one_of(dnfs, context, self), lambda: intersect_dnf(context, sum(dnfs, ()), self)
            )
        if readers.subschema(schema, "not", loc) is not None and alts:
            context = alts
            inner = self.normalize_loc(loc.child("not"))
            alts = self._exactly("not", loc, lambda: negation(inner, context, self), lambda: context)
        if readers.subschema(schema, "if", loc) is not None and alts:
            alts = self._conditional(schema, loc, alts)
        for name, target in objects.dependent_schema_locs(schema, loc):
            if not alts:
                break
            others = tuple(a for a in TOP if not isinstance(a, ObjT))
            present = intersect_dnf((require(name),), self.normalize_loc(target), self)
            alts = intersect_dnf(alts, others + (forbid(name),) + present, self)
        return alts

    def _exactly(self, keyword: str, loc: Loc, build, fallback) -> DNF:
        try:
            return build()
        except NotExact as exc:
            self.unsupported(keyword, loc, str(exc))
            return fallback()

    def _conditional(self, schema: dict, loc: Loc, context: DNF) -> DNF:
        then = self.normalize_loc(loc.child("then")) if readers.subschema(schema, "then", loc) is not None else TOP
        otherwise = self.normalize_loc(loc.child("else")) if readers.subschema(schema, "else", loc) is not None else TOP
        if "then" not in schema and "else" not in schema:
            return context
        condition = self.normalize_loc(loc.child("if"))
        return self._exactly(
            "if", loc, lambda: if_then_else(condition, then, otherwise, context, self), lambda: context
        )

    def _unevaluated(self, schema: dict, loc: Loc, alts: DNF) -> DNF:
        if readers.subschema(schema, "unevaluatedProperties", loc) is not None:
            conj = frozenset({loc.child("unevaluatedProperties")})
            alts = tuple(objects.with_unevaluated(a, conj) if isinstance(a, ObjT) else a for a in alts)
        if readers.subschema(schema, "unevaluatedItems", loc) is not None:
            conj = frozenset({loc.child("unevaluatedItems")})
            result = []
            for alt in alts:
                if isinstance(alt, ArrT):
                    narrowed = arrays.with_unevaluated(alt, conj)
                    if narrowed is None:
                        self.unsupported("unevaluatedItems", loc, "together with contains it cannot be enforced")
                        narrowed = alt
                    alt = narrowed
                result.append(alt)
            alts = tuple(result)
        return alts

    def _literals(self, schema: dict, loc: Loc, alts: DNF) -> DNF:
        if "enum" not in schema and "const" not in schema:
            return alts
        values: list[Value] | None = None
        if "enum" in schema:
            if not isinstance(schema["enum"], list):
                raise SchemaError("enum must be an array", loc.child("enum").pointer)
            if len(schema["enum"]) > MAX_ENUM_VALUES:
                raise ConstraintLimitError(f"enum has more than {MAX_ENUM_VALUES} values")
            enum = (_value(v, loc.child("enum", i)) for i, v in enumerate(schema["enum"]))
            values = list({v.key: v for v in enum}.values())
        if "const" in schema:
            const = _value(schema["const"], loc.child("const"))
            values = [const] if values is None or any(v.key == const.key for v in values) else []
        unconstrained = {node_type(a) for a in alts if a in TOP}
        try:
            kept = tuple(
                v for v in values or () if json_type(v.value) in unconstrained or value_in(alts, v.value, self)
            )
        except SchemaCycle:
            self.unsupported(
                "enum" if "enum" in schema else "const", loc, "values of a schema that refers back to itself"
            )
            kept = tuple(values or ())
        return (LitT(kept),) if kept else ()

    # ------------------------------------------------------------------------------------------
    # Emission
    # ------------------------------------------------------------------------------------------
    def value_rule(self, conj: Conj, depth: int) -> ir.Expr:
        """A reference to the rule for values satisfying `conj` at nesting `depth` (compiled later)."""
        if not self.layout.is_depth_sensitive:
            depth = 0
        elif depth > MAX_INDENT_DEPTH:
            return ir.NOTHING
        key = (conj, depth)
        ref = self._rule_of.get(key)
        if ref is None:
            name = self.reserve(_hint(conj))
            ref = self._rule_of[key] = ir.Ref(name)
            self._pending.append((name, conj, depth))
        return ref

    def literal(self, value: Value, depth: int) -> ir.Expr:
        """The canonical text of one literal value at nesting `depth`."""
        return literal_expr(value.value, depth, self.layout)

    def is_false(self, conj: Conj) -> bool:
        """Whether a conjunction is trivially `false` (a `false` schema or an empty computed one)."""
        if FALSE <= conj:
            return True
        return any(isinstance(p, Loc) and self.registry.schema_at(p) is False for p in conj)

    def reserve(self, hint: str) -> str:
        """A fresh rule name."""
        if len(self._rules.rules) >= MAX_RULES:
            raise ConstraintLimitError(f"the schema needs more than {MAX_RULES} grammar rules")
        return self._rules.reserve(hint)

    def set_rule(self, name: str, expr: ir.Expr) -> None:
        """Give a reserved rule its body."""
        self._rules.set(name, expr)

    def grammar(self, root: Conj) -> ir.Grammar:
        """The grammar of values satisfying `root`.

        Raises:
            EmptyLanguageError: the root schema admits no value.
        """
        if not self.normalize(root):
            raise EmptyLanguageError("the schema admits no value")
        start = self.value_rule(root, 0)
        while self._pending:
            name, conj, depth = self._pending.pop()
            where = min((p for p in conj if isinstance(p, Loc)), default=None)
            self.set_rule(name, emit_dnf(self.normalize(conj), depth, self, name, where))
            self.check_alternatives(0)
        return self._rules.grammar(start)


_CONTAINERS = frozenset({"$defs", "definitions", "$id", "id", "$anchor", "$schema", "$dynamicAnchor"})


def _part_order(part) -> tuple:
    return (1, "", "") if isinstance(part, Synth) else (0, part.doc, part.pointer)


def _hint(conj: Conj) -> str:
    locs = sorted(p for p in conj if isinstance(p, Loc))
    if not locs:
        return "any" if not conj else "computed"
    tail = locs[0].pointer.rsplit("/", 1)[-1]
    return tail or "root"


def _value(raw: object, loc: Loc) -> Value:
    """An enum/const member, after checking its nesting without recursion.

    Raises:
        SchemaNestingError: containers nested deeper than MAX_VALUE_NESTING.
        SchemaError: not a JSON value.
    """
    deepest: dict[int, int] = {}  # container id -> the deepest it was walked at (shared ones once)
    todo: list[tuple[object, int]] = [(raw, 0)]
    while todo:
        value, depth = todo.pop()
        if not isinstance(value, (dict, list, tuple)) or deepest.get(id(value), -1) >= depth:
            continue
        if depth >= MAX_VALUE_NESTING:
            raise SchemaNestingError("enum/const values", MAX_VALUE_NESTING, loc.pointer)
        deepest[id(value)] = depth
        todo += ((child, depth + 1) for child in (value.values() if isinstance(value, dict) else value))
    try:
        return make_value(raw)
    except (TypeError, ValueError) as exc:
        raise SchemaError(f"enum/const holds a value that is not JSON: {exc}", loc.pointer) from exc


def schema_grammar(
    schema: dict | bool,
    *,
    lenient: bool = False,
    whitespace: str = "flexible",
    indent: int | None = None,
    resources: Mapping[str, object] | None = None,
    check: Check = no_check,
) -> ir.Grammar:
    """The grammar of the JSON texts (under the whitespace policy) valid against a JSON Schema.

    Args:
        schema: a JSON Schema (drafts 4-2020-12; `$schema` selects the draft, default 2020-12).
        lenient: keywords that cannot be enforced warn (UnsupportedSchemaWarning) and are ignored.
        whitespace: "flexible" (default: at most one space after `,`/`:`), "compact" or "spaced".
        indent: pretty-printed exactly as `json.dumps(obj, indent=indent)` (overrides `whitespace`).
        resources: documents that remote `$ref`s may use, by absolute URI (never fetched).
        check: the compile deadline, called as the schema expands (`grammars.core.budget`).
    Returns:
        An `ir.Grammar` (compile it with `grammars.compiler.compile_grammar`).
    Raises:
        SchemaError: a malformed schema or an unresolvable `$ref` (with the JSON pointer).
        UnsupportedSchemaError: a keyword that cannot be enforced (keyword and pointer; unless lenient).
        EmptyLanguageError: the schema admits no value.
        ConstraintLimitError: the schema exceeds a size, nesting or time budget.
        GrammarError: an unknown whitespace policy or a bad indent.
    """
    layout = Layout(whitespace, indent)
    registry = SchemaRegistry(schema, resources=resources)
    compiler = SchemaCompiler(registry, layout, lenient, check)
    try:
        grammar = compiler.grammar(frozenset({registry.root}))
    except LoneSurrogateError as exc:  # a property name of this kind: typed, though without its pointer
        raise SchemaError(str(exc)) from exc
    grammar.distinct_keys_after = rx.EPSILON  # JSON objects with a repeated key are not valid output
    grammar.keys_may_run_out = compiler.keys_may_run_out
    return grammar
