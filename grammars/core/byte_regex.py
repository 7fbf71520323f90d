"""Byte-level regular expressions with Brzozowski derivatives: the algebra every terminal is built in.

Terms are immutable, hash-consed (structurally equal terms are the same object, so `is` and `id`
compare languages syntactically) and normalized by smart constructors. The derivative of a term by a
byte is again a term, so a lazily built DFA simply *is* the set of terms reached by derivatives
(see `grammars.core.lexer`). Counted repetition stays a counter (`Repeat(t, 3, 100000)` derives to
`t' . Repeat(t, 2, 99999)`), so bounds like `maxLength: 100000` cost states only as far as a
generation actually goes. Intersection and complement make "any key but the declared ones" and
`pattern` + `maxLength` exact.

Every term has `id`: an int never reused in the process, the key of the memo tables here and of
the lexer's state numbering. `EMPTY` (no string) is id 0.

The tables are bounded: once MAX_INTERNED_TERMS terms are interned, the hash-consing table and every
memo are dropped and interning starts afresh (a new generation). Terms still referenced (by live
grammars and lexer tables) stay valid: ids are never reused, so an old term and its new twin are
merely two names of one language (identity still implies equality, never the converse), and
derivatives of old terms are built in the new generation. Terms form no reference cycles, so the
dropped ones are freed at once, without waiting for the cyclic collector.
"""

from __future__ import annotations

import itertools
import logging
import operator
import threading
from collections import deque
from collections.abc import Iterable
from types import ModuleType
from typing import TYPE_CHECKING

from grammars.core.budget import Check, no_check

if TYPE_CHECKING:
    from grammars.core._derivatives import Store


logger = logging.getLogger(__name__)


def _load_compiled() -> ModuleType | None:
    try:
        from grammars.core import _derivatives
    except ImportError as exc:
        logger.warning(
            "the compiled lexer derivatives (grammars.core._derivatives) are not built (%s): lexer rows and "
            "emptiness searches are derived in Python, several times slower; scripts/install.sh builds them",
            exc,
        )
        return None
    return _derivatives


#: The compiled derivatives (lexer rows, emptiness searches), or None when they are not built (then
#: this module's derivatives do all).
compiled_derivatives = _load_compiled()
#: Takes objects that can be in no reference cycle out of the cyclic collector's tracking
#: (`_derivatives.untrack`; None when not built): full collections then skip the tens of thousands of
#: terms a server's schemas leave behind, and young ones the lexer's new rows (`LexerTables.row`).
untrack = None if compiled_derivatives is None else compiled_derivatives.untrack

ALL_BYTES = (1 << 256) - 1

# Term kinds
K_EMPTY, K_EPS, K_BYTES, K_CONCAT, K_ALT, K_REPEAT, K_AND, K_NOT, K_TAG = range(9)


class Term:
    """A node of the byte-regex algebra. Build terms with the module's constructors, never directly."""

    __slots__ = (
        "id",
        "kind",
        "args",
        "bits",
        "lo",
        "hi",
        "tag",
        "nullable",
        "is_plain",
        "infinite",
        "inhabited",
        "_classes",
    )
    id: int
    kind: int
    args: tuple[Term, ...]
    nullable: bool
    is_plain: bool
    infinite: bool
    inhabited: bool

    def __init__(self, kind: int, args: tuple[Term, ...], bits: int, lo: int, hi: int | None, tag: int) -> None:
        self.kind = kind
        self.args = args
        self.bits = bits
        self.lo = lo
        self.hi = hi
        self.tag = tag
        self._classes: tuple[int, ...] | None = None
        self.nullable = _nullable(kind, args, lo)
        #: No intersection or complement inside: then every term but EMPTY has a nonempty language.
        self.is_plain = kind != K_AND and kind != K_NOT and all([a.is_plain for a in args])
        #: A plain term whose language is surely infinite (`_infinite`).
        self.infinite = self.is_plain and _infinite(kind, args, hi)
        #: Surely has a string, by structure (`_inhabited`): `is_empty` needs no search then.
        self.inhabited = self.nullable or (kind != K_EMPTY if self.is_plain else _inhabited(kind, args))

    def __repr__(self) -> str:
        return f"Term#{self.id}({to_pattern(self)})"


def _infinite(kind: int, args: tuple[Term, ...], hi: int | None) -> bool:
    """Whether a plain term's language is surely infinite. Every plain term but EMPTY has a string and
    the constructors fold EMPTY operands away, so a concatenation is infinite where an operand is, and
    a repeat where its body is or where it is unbounded over a body that is not nullable."""
    if kind == K_CONCAT or kind == K_ALT or kind == K_TAG:
        return any([a.infinite for a in args])
    if kind == K_REPEAT:
        return args[0].infinite or (hi is None and not args[0].nullable)
    return False


def _inhabited(kind: int, args: tuple[Term, ...]) -> bool:
    """Whether a term with an intersection or complement inside surely has a string: an infinite plain
    language less finitely many strings (a key's string where some keys are taken), and the unions,
    concatenations, repeats and tags of such. A search derived each one's classes first."""
    if kind == K_NOT:
        return _is_finite_plain(args[0])
    if kind == K_AND:
        infinite = [a for a in args if a.infinite]
        return len(infinite) <= 1 and all(
            [a.infinite or (a.kind == K_NOT and _is_finite_plain(a.args[0])) for a in args]
        )
    if kind == K_ALT:
        return any([a.inhabited for a in args])
    if kind == K_CONCAT:
        return args[0].inhabited and args[1].inhabited
    if kind == K_REPEAT or kind == K_TAG:
        return args[0].inhabited
    return False


def _is_finite_plain(term: Term) -> bool:
    return term.is_plain and not term.infinite


def _nullable(kind: int, args: tuple[Term, ...], lo: int) -> bool:
    if kind == K_EPS:
        return True
    if kind in (K_EMPTY, K_BYTES):
        return False
    if kind == K_CONCAT:
        return args[0].nullable and args[1].nullable
    if kind == K_ALT:
        return any(a.nullable for a in args)
    if kind == K_REPEAT:
        return lo == 0 or args[0].nullable
    if kind == K_AND:
        return all(a.nullable for a in args)
    if kind == K_NOT:
        return not args[0].nullable
    return args[0].nullable  # K_TAG


# Hash-consing: equal structure, same object (within a generation). Terms compare and hash by identity.
_TABLE: dict[tuple, Term] = {}
_TABLE_LOCK = threading.Lock()
_IDS = itertools.count()
#: How many times the tables started afresh (`CompiledTerms` mirrors one generation), and the first
#: id of the current generation.
_generation = 0
_generation_start = 0
#: Interned terms (and memo entries of each kind) kept before the tables start a new generation.
MAX_INTERNED_TERMS = 250_000


def _intern(
    kind: int, args: tuple[Term, ...] = (), bits: int = 0, lo: int = 0, hi: int | None = 0, tag: int = 0
) -> Term:
    key = (kind, tuple([a.id for a in args]), bits, lo, hi, tag)
    term = _TABLE.get(key)
    if term is None:
        with _TABLE_LOCK:
            term = _TABLE.get(key)
            if term is None:
                if len(_TABLE) >= MAX_INTERNED_TERMS:
                    _new_generation()
                term = Term(kind, args, bits, lo, hi, tag)
                term.id = next(_IDS)
                _TABLE[key] = term
                if untrack is not None:
                    untrack(term, args)  # it holds older terms alone: no cycle passes through it
    return term


_term_id = operator.attrgetter("id")


def num_interned() -> int:
    """How many terms the current generation of the hash-consing table holds."""
    return len(_TABLE)


def _new_generation() -> None:
    """Drop the hash-consing table and every memo, keeping the module's constants canonical."""
    _TABLE.clear()
    for memo in (_DERIVATIVES, _MEETS, _CLAMPED, _EMPTINESS):
        memo.clear()
    for constant in _CONSTANTS:
        _TABLE[
            (constant.kind, tuple([a.id for a in constant.args]), constant.bits, constant.lo, constant.hi, constant.tag)
        ] = constant
    global _generation, _generation_start
    _generation += 1
    _generation_start = next(_IDS)


EMPTY = _intern(K_EMPTY)
EPSILON = _intern(K_EPS)
ANY_BYTE = _intern(K_BYTES, bits=ALL_BYTES)


# ----------------------------------------------------------------------------------------------
# Constructors (normalizing)
# ----------------------------------------------------------------------------------------------


def byte_set(bits: int) -> Term:
    """The set of single bytes whose bits are set in the 256-bit mask `bits`."""
    bits &= ALL_BYTES
    return _intern(K_BYTES, bits=bits) if bits else EMPTY


def byte_range(lo: int, hi: int) -> Term:
    """Any single byte in [lo, hi]."""
    return byte_set(((1 << (hi + 1)) - 1) ^ ((1 << lo) - 1)) if lo <= hi else EMPTY


def literal(data: bytes) -> Term:
    """Exactly the byte string `data`."""
    return concat(*(byte_set(1 << b) for b in data))


def literals(options: Iterable[bytes]) -> Term:
    """Exactly the byte strings in `options`, as a trie-shaped term: an enum of 100,000 values stays
    fast to derive (each derivative sees at most 256 branches, not every option)."""
    trie: dict = {}
    for data in options:
        node = trie
        for byte in data:
            node = node.setdefault(byte, {})
        node[None] = True
    return _trie_term(trie)


def _trie_term(node: dict) -> Term:
    # Iterative post-order, so deep tries (long literals) do not hit the recursion limit.
    built: dict[int, Term] = {}
    stack: list[tuple[dict, bool]] = [(node, False)]
    while stack:
        current, children_done = stack.pop()
        if children_done:
            branches = [concat(byte_set(1 << b), built[id(child)]) for b, child in current.items() if b is not None]
            if None in current:
                branches.append(EPSILON)
            built[id(current)] = alt(*branches)
        else:
            stack.append((current, True))
            stack.extend((child, False) for b, child in current.items() if b is not None)
    return built[id(node)]


def concat(*terms: Term) -> Term:
    """The concatenation of `terms`, right-nested."""
    result = EPSILON
    for term in reversed(terms):
        result = _concat2(term, result)
    return result


def _concat2(a: Term, b: Term) -> Term:
    if a is EMPTY or b is EMPTY:
        return EMPTY
    if a is EPSILON:
        return b
    if b is EPSILON:
        return a
    if a.kind == K_CONCAT:
        # Iterate over a's right-nested chain: recursing per element overflowed the stack for long
        # literals (e.g. the derivative of `(a{3000})*`). Heads are never EMPTY/EPSILON/CONCAT.
        heads = []
        while a.kind == K_CONCAT:
            heads.append(a.args[0])
            a = a.args[1]
        result = _concat2(a, b)
        for head in reversed(heads):
            result = _intern(K_CONCAT, (head, result))
        return result
    return _intern(K_CONCAT, (a, b))


def alt(*terms: Term) -> Term:
    """The union of `terms` (flattened, deduplicated, single-byte members merged)."""
    members: set[Term] = set()
    bits = 0
    for term in terms:
        for t in term.args if term.kind == K_ALT else (term,):
            if t.kind == K_BYTES:
                bits |= t.bits
            elif t is not EMPTY:
                members.add(t)
    if bits:
        members.add(byte_set(bits))
    if len(members) > 1:
        members = _drop_subsumed_counters(members)
    if not members:
        return EMPTY
    if len(members) == 1:
        return members.pop()
    return _intern(K_ALT, tuple(sorted(members, key=_term_id)))


def _drop_subsumed_counters(members: set[Term]) -> set[Term]:
    """Keep only the widest of `x{lo,p}.y` and `x{lo,q}.y` (q >= p): the narrower adds nothing.

    Derivatives of ambiguous nested counters otherwise pile up one member per count. Of two equally
    wide, which are twins across generations (one language), the one `_twin_rank` puts first stays,
    so that the union is the same term whatever the order of the set, here and in C++.
    """
    widest: dict[tuple[int, int, int], Term] = {}
    kept: set[Term] = set()
    for term in members:
        counter, rest = _counter_and_rest(term)
        if counter.kind != K_REPEAT:
            kept.add(term)
            continue
        key = (counter.args[0].id, counter.lo, rest.id)
        other = widest.get(key)
        if other is None or _upper(other) < _upper(term):
            widest[key] = term
        elif _upper(other) == _upper(term) and _twin_rank(term) < _twin_rank(other):
            widest[key] = term
    return kept | set(widest.values())


def _counter_and_rest(term: Term) -> tuple[Term, Term]:
    return (term.args[0], term.args[1]) if term.kind == K_CONCAT else (term, EPSILON)


def _upper(term: Term) -> float:
    counter = _counter_and_rest(term)[0]
    return float("inf") if counter.hi is None else counter.hi


def _twin_rank(term: Term) -> tuple[int, int]:
    """Of twins `x{lo,q}.y` (the counters or the members of older generations), the current ones
    first, then the oldest: the order _derivatives.cpp's `drop_subsumed_counters` keeps them in."""
    return _age(_counter_and_rest(term)[0]), _age(term)


def _age(term: Term) -> int:
    """-1 for a term of the current generation (or a constant), else its id (older: smaller)."""
    return -1 if term.id >= _generation_start or term in _CONSTANTS else term.id


def repeat(term: Term, lo: int, hi: int | None) -> Term:
    """`term` repeated between `lo` and `hi` times (`hi=None`: unbounded)."""
    if hi is not None and hi < lo:
        return EMPTY
    if term.nullable:
        lo = 0  # a nullable body can always make up the missing repetitions with empty strings
    if hi == 0 or term is EPSILON:
        return EPSILON
    if term is EMPTY:
        return EPSILON if lo == 0 else EMPTY
    if lo == 1 and hi == 1:
        return term
    if term.kind == K_REPEAT and term.lo == 0 and term.hi is None and lo == 0 and hi is None:
        return term
    return _intern(K_REPEAT, (term,), lo=lo, hi=hi)


def star(term: Term) -> Term:
    return repeat(term, 0, None)


def optional(term: Term) -> Term:
    return alt(term, EPSILON)


def intersect(*terms: Term) -> Term:
    """Strings in every one of `terms`."""
    members: set[Term] = set()
    for term in terms:
        for t in term.args if term.kind == K_AND else (term,):
            if t is EMPTY:
                return EMPTY
            if t is not ANYTHING:
                members.add(t)
    if not members:
        return ANYTHING
    if len(members) == 1:
        return members.pop()
    return _intern(K_AND, tuple(sorted(members, key=_term_id)))


def complement(term: Term) -> Term:
    """Every byte string not in `term`."""
    if term.kind == K_NOT:
        return term.args[0]
    # Plain answers for the two extremes, so a restriction that no longer bites (the derivative of
    # an excluded set the text has left) simplifies away and its lexer states merge with plain ones.
    if term is EMPTY:
        return ANYTHING
    if term is ANYTHING:
        return EMPTY
    return _intern(K_NOT, (term,))


def difference(a: Term, b: Term) -> Term:
    """Strings in `a` but not in `b`."""
    return intersect(a, complement(b)) if b is not EMPTY else a


def tag(tag_id: int, term: Term) -> Term:
    """Mark `term` as the lexeme of terminal `tag_id`: tags survive derivatives, so a union of tagged
    terms tells, in every state, which terminals are still alive and which accept."""
    return _intern(K_TAG, (term,), tag=tag_id) if term is not EMPTY else EMPTY


ANYTHING = star(ANY_BYTE)
#: Terms other modules compare with `is`: they survive every new generation.
_CONSTANTS = (EMPTY, EPSILON, ANY_BYTE, ANYTHING)


# ----------------------------------------------------------------------------------------------
# Derivatives
# ----------------------------------------------------------------------------------------------

#: Derivatives by `term.id << 8 | byte` (int keys: no key object per entry for the collector to track).
_DERIVATIVES: dict[int, Term] = {}


def derivative(term: Term, byte: int) -> Term:
    """The term matching { s : bytes([byte]) + s in term }."""
    key = term.id << 8 | byte
    result = _DERIVATIVES.get(key)
    if result is None:
        result = _derive(term, byte)
        if len(_DERIVATIVES) >= MAX_INTERNED_TERMS:
            _DERIVATIVES.clear()
        _DERIVATIVES[key] = result
    return result


def _derive(term: Term, byte: int) -> Term:
    return _DERIVE_BY_KIND[term.kind](term, byte)


def _derive_nothing(term: Term, byte: int) -> Term:
    return EMPTY


def _derive_bytes(term: Term, byte: int) -> Term:
    return EPSILON if term.bits >> byte & 1 else EMPTY


def _derive_alt(term: Term, byte: int) -> Term:
    # Most members of a lexer state die on a given byte: skip `alt`'s normalization when at most
    # one survives (`alt` of a single term is that term).
    alive = [d for d in [derivative(t, byte) for t in term.args] if d is not EMPTY]
    if len(alive) > 1:
        return alt(*alive)
    return alive[0] if alive else EMPTY


def _derive_repeat(term: Term, byte: int) -> Term:
    body = term.args[0]
    remaining = repeat(body, max(term.lo - 1, 0), None if term.hi is None else term.hi - 1)
    return _concat2(derivative(body, byte), remaining)


def _derive_and(term: Term, byte: int) -> Term:
    return intersect(*[derivative(t, byte) for t in term.args])


def _derive_not(term: Term, byte: int) -> Term:
    return complement(derivative(term.args[0], byte))


def _derive_tag(term: Term, byte: int) -> Term:
    return tag(term.tag, derivative(term.args[0], byte))


def _derive_concat(term: Term, byte: int) -> Term:
    """d(head rest) = d(head) rest | d(rest) if head is nullable, else d(head) rest; walked along the
    right spine with a loop, since a run of thousands of nullable items (`a?a?a?...`) is that deep."""
    branches: list[Term] = []
    while term.kind == K_CONCAT:
        head, rest = term.args
        branches.append(_concat2(derivative(head, byte), rest))
        if not head.nullable:
            return alt(*branches)
        term = rest
    branches.append(derivative(term, byte))
    return alt(*branches)


_DERIVE_BY_KIND = (
    _derive_nothing,  # K_EMPTY
    _derive_nothing,  # K_EPS
    _derive_bytes,
    _derive_concat,
    _derive_alt,
    _derive_repeat,
    _derive_and,
    _derive_not,
    _derive_tag,
)


def derivative_classes(term: Term) -> tuple[int, ...]:
    """A partition of the 256 bytes (as bit masks) such that bytes of one class have equal derivatives.

    Computing one derivative per class instead of one per byte is what makes a DFA row cheap.
    """
    classes = term._classes
    if classes is None:
        # Operands first, from an explicit stack: a concatenation of thousands of nullable items is
        # that deep, past Python's recursion limit.
        pending = _operands_without_classes(term)
        while pending:
            missing = _operands_without_classes(pending[-1])
            if missing:
                pending.extend(missing)
            else:
                top = pending.pop()
                top._classes = top._classes or _classes(top)
        classes = term._classes = _classes(term)
    return classes


def _operands_without_classes(term: Term) -> list[Term]:
    return [operand for operand in _class_operands(term) if operand._classes is None]


def _class_operands(term: Term) -> tuple[Term, ...]:
    """The operands whose classes `_classes(term)` reads."""
    if term.kind == K_CONCAT:
        head, tail = term.args
        return (head, tail) if head.nullable else (head,)
    if term.kind in (K_EMPTY, K_EPS, K_BYTES):
        return ()
    if term.kind in (K_ALT, K_AND):
        return term.args
    return term.args[:1]  # K_REPEAT, K_NOT, K_TAG


def _classes(term: Term) -> tuple[int, ...]:
    """The classes of `term`, from its operands' (already computed: see `derivative_classes`)."""
    kind = term.kind
    if kind in (K_EMPTY, K_EPS):
        return (ALL_BYTES,)
    if kind == K_BYTES:
        rest = ALL_BYTES & ~term.bits
        return (term.bits, rest) if rest else (term.bits,)
    if kind == K_CONCAT:
        head, tail = term.args
        parts = derivative_classes(head)
        return _meet(parts, derivative_classes(tail)) if head.nullable else parts
    if kind in (K_ALT, K_AND):
        parts = (ALL_BYTES,)
        for t in term.args:
            parts = _meet(parts, derivative_classes(t))
        return parts
    return derivative_classes(term.args[0])  # K_REPEAT, K_NOT, K_TAG


def _meet(p: tuple[int, ...], q: tuple[int, ...]) -> tuple[int, ...]:
    if len(p) == 1 or p == q:
        return q
    if len(q) == 1:
        return p
    key = (p, q)
    found = _MEETS.get(key)
    if found is None:
        if len(_MEETS) >= MAX_INTERNED_TERMS:
            _MEETS.clear()
        found = _MEETS[key] = tuple(x & y for x in p for y in q if x & y)
    return found


#: Meets of partitions: the members of intersections and unions share a few partitions, met again
#: for every state they reach.
_MEETS: dict[tuple[tuple[int, ...], tuple[int, ...]], tuple[int, ...]] = {}


def lowest_byte(bits: int) -> int:
    """The smallest byte in a nonempty 256-bit mask."""
    return (bits & -bits).bit_length() - 1


# ----------------------------------------------------------------------------------------------
# Inspection
# ----------------------------------------------------------------------------------------------


def tags_of(term: Term) -> tuple[tuple[int, Term], ...]:
    """The (tag, residual term) members of a union of tagged terms (a lexer state)."""
    members = term.args if term.kind == K_ALT else (term,)
    return tuple((t.tag, t.args[0]) for t in members if t.kind == K_TAG)


#: Clamped terms by limit, then by term id.
_CLAMPED: dict[int, dict[int, Term]] = {}


def clamp_counters(term: Term, limit: int) -> Term:
    """`term` with every counter relaxed beyond `limit`: `x{lo,hi}` becomes `x{min(lo, limit+1),}`
    when hi > limit. For a plain term (no intersection or complement), both agree on every string of
    at most `limit` bytes and on which of their prefixes can still be completed and which accept, so
    walks of tokens no longer than `limit` are the same from either: a `maxLength: 100000` string
    then has one walk, not one per count. Other terms are returned unchanged."""
    if not term.is_plain:
        return term
    if len(_CLAMPED.get(limit, ())) >= MAX_INTERNED_TERMS:
        _CLAMPED.clear()
    memo = _CLAMPED.setdefault(limit, {})  # lexer states share most subterms: clamp each once
    # Post-order with an explicit stack: a long literal is a concatenation thousands deep, which
    # overflowed Python's stack when this recursed.
    pending = [term]
    while pending:
        t = pending[-1]
        if t.id in memo:
            pending.pop()
            continue
        kind = t.kind
        has_args = kind in (K_CONCAT, K_ALT, K_TAG, K_REPEAT)
        unclamped = [a for a in t.args if a.id not in memo] if has_args else []
        if unclamped:
            pending.extend(unclamped)
            continue
        pending.pop()
        args = [memo[a.id] for a in t.args] if has_args else []
        if kind == K_CONCAT:
            result = concat(*args)
        elif kind == K_ALT:
            result = alt(*args)
        elif kind == K_TAG:
            result = tag(t.tag, args[0])
        elif kind == K_REPEAT:
            relaxed = t.hi is not None and t.hi > limit
            result = repeat(
                args[0], min(t.lo, limit + 1) if relaxed or t.lo > limit else t.lo, None if relaxed else t.hi
            )
        else:
            result = t
        memo[t.id] = result
    return memo[term.id]


#: Derivatives `is_empty` explores before it calls a term with intersection or complement undecided.
MAX_EMPTINESS_STATES = 1_000
_EMPTINESS: dict[int, bool | None] = {}


def is_empty(term: Term, check: Check = no_check) -> bool | None:
    """Whether `term` matches no string; None when undecided within MAX_EMPTINESS_STATES.

    Only EMPTY is empty among plain terms, and a term `Term.inhabited` by structure has a string.
    Others are searched breadth-first (shortest witness first) for a derivative that is nullable,
    plain or inhabited, each of which proves a string. Memoized.
    The search runs on the compiled derivatives where they are built (a search over an intersection
    with a `multipleOf` or a long key list takes seconds in Python, the first time a process meets
    it), else on this module's (`search_emptiness`, the reference). `check` is called per explored
    state.

    Raises:
        ConstraintLimitError: from `check` (nothing is memoized then).
    """
    if term is EMPTY:
        return True
    if term.inhabited:
        return False
    found = _EMPTINESS.get(term.id, False)
    if found is not False:
        return found
    with _EMPTINESS_LOCK:  # a compiled store is not thread-safe
        carried = _emptiness_node(term)
        if carried is not None:
            store, node = carried
            result = store.is_empty(node, check)
    if carried is None:
        result = search_emptiness(term, check)
    if len(_EMPTINESS) >= MAX_INTERNED_TERMS:
        _EMPTINESS.clear()
    _EMPTINESS[term.id] = result
    return result


def search_emptiness(term: Term, check: Check = no_check) -> bool | None:
    """`is_empty` by this module's derivatives, unmemoized: the reference for the compiled search.

    Raises:
        ConstraintLimitError: from `check`.
    """
    if term is EMPTY:
        return True
    if term.inhabited:
        return False
    result: bool | None = True
    seen = {term.id}
    frontier = deque([term])
    while frontier and result:
        check()
        current = frontier.popleft()
        for byte_class in derivative_classes(current):
            nxt = derivative(current, lowest_byte(byte_class))
            if nxt is EMPTY or nxt.id in seen:
                continue
            if nxt.inhabited:
                result = False
                break
            if len(seen) >= MAX_EMPTINESS_STATES:
                result = None
                break
            seen.add(nxt.id)
            frontier.append(nxt)
    return result


#: The compiled store emptiness is searched in (replaced with the generation of terms, or once full);
#: None until first used or where the extension is not built.
_emptiness_terms: CompiledTerms | None = None
_EMPTINESS_LOCK = threading.Lock()


def _emptiness_node(term: Term) -> tuple[Store, int] | None:
    """The compiled store emptiness is searched in and `term`'s node there (the caller holds
    _EMPTINESS_LOCK); None where the extension is not built or the store cannot hold `term` (a
    counter bound beyond 64 bits)."""
    global _emptiness_terms
    if compiled_derivatives is None:
        return None
    compiled = _emptiness_terms
    if compiled is None or not compiled.is_current() or compiled.store.num_nodes() >= MAX_INTERNED_TERMS:
        compiled = _emptiness_terms = CompiledTerms(compiled_derivatives.Store())
    try:
        return compiled.store, compiled.node(term)
    except OverflowError:
        return None


def matches(term: Term, data: bytes) -> bool:
    """Whether `data` is in the language of `term` (by derivatives; for tests and small checks)."""
    for byte in data:
        term = derivative(term, byte)
        if term is EMPTY:
            return False
    return term.nullable


def shares_string(term: Term, few: Term, check: Check = no_check) -> bool:
    """Whether `term` and `few` match a common string, where `few` allows few bytes at each step
    (a finite set of short strings, such as the spellings of one JSON key).

    Exact like `is_empty(intersect(term, few))` but much cheaper when `term` is large (a string
    lexeme less a thousand names): the search follows `few`'s bytes one by one, so it never
    partitions the bytes for `term` as a breadth-first search of the intersection must.

    Raises:
        ConstraintLimitError: from `check`, called per explored pair.
    """
    seen: set[tuple[int, int]] = set()
    pending = [(term, few)]
    while pending:
        check()
        current, rest = pending.pop()
        if current.nullable and rest.nullable:
            return True
        for byte_class in derivative_classes(rest):
            after_rest = derivative(rest, lowest_byte(byte_class))
            if after_rest is EMPTY:
                continue
            for byte in iter_bytes(byte_class):
                after = derivative(current, byte)
                if after is not EMPTY and (after.id, after_rest.id) not in seen:
                    seen.add((after.id, after_rest.id))
                    pending.append((after, after_rest))
    return False


def iter_bytes(bits: int) -> Iterable[int]:
    while bits:
        low = bits & -bits
        yield low.bit_length() - 1
        bits ^= low


def to_pattern(term: Term, max_len: int = 120) -> str:
    """A readable regex-like rendering, for error messages and debugging."""
    try:
        text = _render(term)
    except RecursionError:  # a very long chain: its start is what a message needs
        text = _render_flat(term, max_len)
    return text if len(text) <= max_len else text[: max_len - 3] + "..."


def _render_flat(term: Term, max_len: int) -> str:
    parts: list[str] = []
    while term.kind == K_CONCAT and sum(map(len, parts)) < max_len:
        parts.append(_render(term.args[0]) if term.args[0].kind in (K_BYTES, K_EPS) else "(…)")
        term = term.args[1]
    return "".join(parts) + "…"


def _render(term: Term) -> str:
    kind = term.kind
    if kind == K_EMPTY:
        return "∅"
    if kind == K_EPS:
        return "ε"
    if kind == K_BYTES:
        if term.bits == ALL_BYTES:
            return "."
        members = list(iter_bytes(term.bits))
        if len(members) == 1:
            return _show_byte(members[0])
        return "[" + "".join(_show_byte(b) for b in members[:12]) + ("…" if len(members) > 12 else "") + "]"
    if kind == K_CONCAT:
        return _render(term.args[0]) + _render(term.args[1])
    if kind == K_ALT:
        return "(" + "|".join(_render(t) for t in term.args) + ")"
    if kind == K_REPEAT:
        hi = "" if term.hi is None else str(term.hi)
        return f"({_render(term.args[0])}){{{term.lo},{hi}}}"
    if kind == K_AND:
        return "(" + "&".join(_render(t) for t in term.args) + ")"
    if kind == K_NOT:
        return f"~({_render(term.args[0])})"
    return f"<{term.tag}:{_render(term.args[0])}>"


def _show_byte(b: int) -> str:
    c = chr(b)
    if c.isalnum():
        return c
    return repr(c)[1:-1] if b < 128 else f"\\x{b:02x}"


# ----------------------------------------------------------------------------------------------
# Compiled derivatives
# ----------------------------------------------------------------------------------------------


class CompiledTerms:
    """Terms carried to and from a compiled store (`_derivatives.Store`, built from _derivatives.cpp),
    whose derivatives follow this module's rules in C++: a node carried back is the very term
    `derivative` builds here. The lexer fills its rows through it; this module stays the reference.

    It mirrors the current generation of the tables: once they start afresh it is stale (`is_current`),
    since the terms it would carry back are of the old generation. Terms of older generations are
    carried over as nodes of their own (see _derivatives.cpp), as they stay terms of their own here.

    Args:
        store: an empty `_derivatives.Store`.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._generation = _generation
        self._term_of_node: dict[int, Term] = {0: EMPTY}

    def is_current(self) -> bool:
        return self._generation == _generation

    def node(self, term: Term) -> int:
        """The store's node for `term`, carrying over the subterms it lacks (`nodes`).

        Raises:
            OverflowError: a counter bound or tag beyond 64 bits.
        """
        return self.nodes((term,))[0]

    def nodes(self, terms: tuple[Term, ...]) -> list[int]:
        """The store's nodes for `terms`, carrying over the subterms they lack (in one compiled call,
        `Store.carry`).

        Raises:
            OverflowError: a counter bound or tag beyond 64 bits.
        """
        return self.store.carry(terms, self._term_of_node, _generation_start, _CONSTANTS)

    def adopt(self, source: CompiledTerms, nodes: list[int]) -> list[int]:
        """The nodes here of `nodes` of `source` (a store of the current generation), carried over in
        one compiled call (`Store.adopt`) with the terms of older generations they hold, which only
        their Python terms name (`term` would read such a node back as its current twin)."""
        adopted, twins = self.store.adopt(source.store, nodes)
        pairs = memoryview(twins).cast("i").tolist()
        for old, new in zip(pairs[::2], pairs[1::2]):  # the store remembers each by id (its origin)
            self._term_of_node.setdefault(new, source._term_of_node[old])
        return memoryview(adopted).cast("i").tolist()

    def term(self, node: int) -> Term:
        """The term of a store's node, interned here (post-order, no recursion)."""
        known = self._term_of_node
        pending = [node]
        while pending:
            top = pending[-1]
            if top in known:
                pending.pop()
                continue
            kind, members, bits, lo, hi, tag_id = self.store.describe(top)
            missing = [m for m in members if m not in known]
            if missing:
                pending.extend(missing)
                continue
            pending.pop()
            args = [known[m] for m in members]
            if kind in (K_ALT, K_AND):
                args.sort(key=_term_id)
            term = _intern(kind, tuple(args), int.from_bytes(bits, "little"), lo, None if hi == -1 else hi, tag_id)
            known[top] = term
            self.store.remember(term.id, top)
        return known[node]
