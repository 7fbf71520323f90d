"""The parser: a recursive transition network over lexemes, run as a set of stacks.

Each rule becomes a small epsilon-NFA over lexemes and rule calls (Thompson construction; bounded
repetitions of more than a few items become *counter* rules whose frame carries the count, so
`maxItems: 100000` costs one node). A parser configuration is the set of stacks of frames
`(node, count)` the input so far can be in; it is hash-consed to an int, and `advance(config,
lexeme)` is memoized, so after warm-up a parser step is a dict lookup. Tail calls are not pushed,
so right-recursive and repetitive structures keep stacks shallow.

Configurations are never forgotten (live matchers hold their ids), so their total size is a budget:
MAX_FRAMES stack frames over all of a parser's configurations. A very ambiguous grammar (a
palindrome, where every letter may be the middle) grows a configuration per input and a frame per
byte in each of its stacks; the budget turns that into a `ConstraintLimitError` at tens of
megabytes instead of gigabytes.

The configurations run compiled (`grammars.core._parser`, built from _parser.cpp) when the extension
is built: the same rules, ids and budgets, with stacks as hash-consed lists in C++ that the garbage
collector never walks. This module's configurations are the reference (`Parser(compiled=False)`),
and the fallback when the extension is missing.

The grammar must be normalized (`grammars.core.normalize`): no left recursion, non-nullable lexemes.
"""

from __future__ import annotations

import logging
import math
import threading
from array import array
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, NamedTuple

from grammars.core import byte_regex as rx
from grammars.core import ir
from grammars.core.analysis import check_no_left_recursion
from grammars.core.budget import Check, no_check
from grammars.errors import ConstraintLimitError

if TYPE_CHECKING:
    from grammars.core._parser import Configurations

#: Repetitions with at most this many optional copies of a small item are unrolled; larger ones count.
MAX_UNROLLED_COPIES = 8
MAX_UNROLLED_ITEM_SIZE = 12
#: Budgets that turn runaway inputs into errors instead of hangs.
MAX_NODES = 1_000_000
MAX_STACK_DEPTH = 20_000
MAX_STACKS_PER_CONFIG = 10_000
MAX_EXPANSION_STEPS = 200_000
#: Stack frames held by all the configurations of one parser.
MAX_FRAMES = 5_000_000
#: Stacks whose expansion is memoized before the memo starts afresh.
MAX_CACHED_EXPANSIONS = 100_000

#: Largest repetition bound the compiled configurations count to (their frames hold an int64).
MAX_COMPILED_COUNT = 1 << 62

#: The budgets' errors, formatted with MAX_FRAMES, MAX_STACKS_PER_CONFIG (read when raised, or when
#: compiled configurations are made).
TOO_MANY_FRAMES = "the parser exceeded its budget of {} stack frames (a very ambiguous grammar)"
TOO_MANY_STACKS = "the parser tracks more than {} stacks (a very ambiguous grammar)"
TOO_DEEP = "the parser's stack exceeded its budget (nesting too deep)"

Frame = tuple[int, int]  # (node, repetition count)
Stack = tuple[Frame, ...]

logger = logging.getLogger(__name__)


def _load_compiled() -> ModuleType | None:
    try:
        from grammars.core import _parser
    except ImportError as exc:
        logger.warning(
            "the compiled parser configurations (grammars.core._parser) are not built (%s): parser steps run in "
            "Python, slower and heavier on the garbage collector; scripts/install.sh builds them",
            exc,
        )
        return None
    return _parser


#: The compiled configurations, or None when they are not built (then this module's run).
compiled_parser = _load_compiled()


class _Node:
    """One node of the network (a plain slotted class: a schema's grammar makes tens of thousands)."""

    __slots__ = ("lexemes", "calls", "eps", "is_final", "counter")

    def __init__(self) -> None:
        self.lexemes: dict[int, list[int]] = {}  # lexeme index -> target nodes
        self.calls: list[tuple[int, int]] = []  # (callee start node, return node)
        self.eps: list[int] = []
        self.is_final = False
        #: For the single node of a counter rule: (min, max or None, item rule start node).
        self.counter: tuple[int, int | None, int] | None = None


class Network(NamedTuple):
    """The network as flat arrays (not containers the garbage collector walks): for each kind of edge,
    offsets per node (the edges of node n are [offsets[n], offsets[n + 1])) and the edges' ends; then
    per node whether it ends its rule and its counter (min, max or -1 for none, item start node or -1
    for a node that does not count; bounds clamped at MAX_COMPILED_COUNT, where the configurations run
    in Python)."""

    lexeme_offsets: array[int]
    lexemes: array[int]
    lexeme_targets: array[int]
    call_offsets: array[int]
    callees: array[int]
    returns: array[int]
    eps_offsets: array[int]
    eps_targets: array[int]
    finals: array[int]
    counter_low: array[int]
    counter_high: array[int]
    counter_item: array[int]


class Parser:
    """Configurations, transitions and acceptance of one grammar's recursive transition network.

    Args:
        grammar: a normalized grammar.
        check: called per rule while building (a compile deadline).
        compiled: run the configurations compiled (None: when the extension is built and every
            repetition bound fits it; True: required; False: in Python, the reference).
    Raises:
        GrammarError: left recursion through several rules.
        ConstraintLimitError: the network would exceed MAX_NODES, or from `check`.
        RuntimeError: `compiled=True` without the extension, or a bound beyond MAX_COMPILED_COUNT.
    """

    def __init__(self, grammar: ir.Grammar, check: Check = no_check, *, compiled: bool | None = None) -> None:
        check_no_left_recursion(grammar.rules)
        self.lexeme_terms: list[rx.Term] = []
        self._lexeme_index: dict[int, int] = {}
        self._nodes: list[_Node] = []
        self._rule_start: dict[str, int] = {}
        for name in grammar.rules:
            self._rule_start[name] = self._new_node()
        for name, expr in grammar.rules.items():
            check()
            end = self._build(expr, self._rule_start[name])
            self._nodes[end].is_final = True
        self._finish_nodes()
        start = self._rule_start[grammar.start]
        self.network = self._flat_network()
        self._compiled = self._compiled_configurations(compiled)
        if self._compiled is not None:
            self._nodes = []  # the compiled configurations read `network`: the nodes would only hold the collector up
            self.initial: int = self._compiled.start(start)
            return
        # Configurations, hash-consed.
        self._config_ids: dict[tuple[frozenset[Stack], bool], int] = {}
        self._configs: list[frozenset[Stack]] = []
        self._accepting: list[bool] = []
        self._allowed: list[tuple[int, ...]] = []
        self._advance_cache: dict[tuple[int, int], int | None] = {}
        self._expand_cache: dict[Stack, tuple[frozenset[Stack], bool]] = {}
        self._register_lock = threading.Lock()
        self._num_frames = 0
        self.initial = self._config_of([((start, 0),)])

    # ------------------------------------------------------------------------------------------
    # Building the network
    # ------------------------------------------------------------------------------------------
    def _new_node(self) -> int:
        if len(self._nodes) >= MAX_NODES:
            raise ConstraintLimitError(f"the grammar needs more than {MAX_NODES} parser nodes")
        self._nodes.append(_Node())
        return len(self._nodes) - 1

    def _lexeme(self, term: rx.Term) -> int:
        index = self._lexeme_index.get(term.id)
        if index is None:
            index = len(self.lexeme_terms)
            self.lexeme_terms.append(term)
            self._lexeme_index[term.id] = index
        return index

    def _build(self, expr: ir.Expr, entry: int) -> int:
        """Add the edges of `expr` starting at node `entry`; return the node where it ends."""
        if isinstance(expr, ir.Lexeme):
            out = self._new_node()
            self._nodes[entry].lexemes.setdefault(self._lexeme(expr.term), []).append(out)
            return out
        if isinstance(expr, ir.Ref):
            out = self._new_node()
            self._nodes[entry].calls.append((self._rule_start[expr.name], out))
            return out
        if isinstance(expr, ir.Seq):
            for item in expr.items:
                entry = self._build(item, entry)
            return entry
        if isinstance(expr, ir.Alt):
            out = self._new_node()
            for option in expr.options:
                self._nodes[self._build(option, entry)].eps.append(out)
            return out
        return self._build_repeat(expr, entry)

    def _build_repeat(self, expr: ir.Repeat, entry: int) -> int:
        small = ir.expr_size(expr.item) <= MAX_UNROLLED_ITEM_SIZE
        optional_copies = None if expr.max is None else expr.max - expr.min
        if (
            small
            and expr.min <= MAX_UNROLLED_COPIES
            and (optional_copies is None or optional_copies <= MAX_UNROLLED_COPIES)
        ):
            for _ in range(expr.min):
                entry = self._build(expr.item, entry)
            if optional_copies is None:  # a loop
                head = self._new_node()
                self._nodes[entry].eps.append(head)
                self._nodes[self._build(expr.item, head)].eps.append(head)
                return head
            out = self._new_node()
            for _ in range(optional_copies):
                self._nodes[entry].eps.append(out)
                entry = self._build(expr.item, entry)
            self._nodes[entry].eps.append(out)
            return out
        # A counter rule: one node whose frame counts the items, calling the item as its own rule.
        item_start = self._new_node()
        self._nodes[self._build(expr.item, item_start)].is_final = True
        head = self._new_node()
        self._nodes[head].counter = (expr.min, expr.max, item_start)
        out = self._new_node()
        self._nodes[entry].calls.append((head, out))
        return out

    def _finish_nodes(self) -> None:
        """Set up the lazily filled epsilon closures (per node: computing them all up front is
        quadratic in a schema with thousands of optional properties) and tail-call flags."""
        self._closures: dict[int, tuple[int, ...]] = {}
        self._tails: dict[int, bool] = {}

    def _closure(self, start: int) -> tuple[int, ...]:
        """The nodes reachable from `start` through epsilon edges, `start` first."""
        found = self._closures.get(start)
        if found is None:
            order = [start]
            seen = {start}
            for node in order:
                for nxt in self._nodes[node].eps:
                    if nxt not in seen:
                        seen.add(nxt)
                        order.append(nxt)
            found = self._closures[start] = tuple(order)
        return found

    def _is_tail(self, node: int) -> bool:
        """Whether returning to `node` only returns further (then a call need not push it)."""
        found = self._tails.get(node)
        if found is None:
            nodes = self._nodes
            found = self._tails[node] = all(
                nodes[m].is_final and not nodes[m].lexemes and not nodes[m].calls and nodes[m].counter is None
                for m in self._closure(node)
            )
        return found

    def _compiled_configurations(self, compiled: bool | None) -> Configurations | None:
        """The compiled configurations of this network, or None where they run in Python."""
        if compiled is False:
            return None
        fits = all(
            node.counter is None or max(node.counter[0], node.counter[1] or 0) < MAX_COMPILED_COUNT
            for node in self._nodes
        )
        if compiled_parser is None or not fits:
            if compiled:
                raise RuntimeError(
                    "grammars.core._parser is not built (scripts/install.sh builds it)"
                    if compiled_parser is None
                    else f"a repetition bound beyond {MAX_COMPILED_COUNT} needs the Python configurations"
                )
            return None
        limits = (MAX_FRAMES, MAX_STACKS_PER_CONFIG, MAX_EXPANSION_STEPS, MAX_STACK_DEPTH, MAX_CACHED_EXPANSIONS)
        messages = (TOO_MANY_FRAMES.format(MAX_FRAMES), TOO_MANY_STACKS.format(MAX_STACKS_PER_CONFIG), TOO_DEEP)
        return compiled_parser.Configurations(self.network, limits, ConstraintLimitError, messages)

    def _flat_network(self) -> Network:
        lexeme_offsets, lexemes, lexeme_targets = array("q", [0]), array("q"), array("q")
        call_offsets, callees, returns = array("q", [0]), array("q"), array("q")
        eps_offsets, eps_targets = array("q", [0]), array("q")
        finals, counter_low, counter_high, counter_item = array("b"), array("q"), array("q"), array("q")
        for node in self._nodes:
            for lexeme, targets in node.lexemes.items():
                lexemes.extend([lexeme] * len(targets))
                lexeme_targets.extend(targets)
            lexeme_offsets.append(len(lexemes))
            for callee, ret in node.calls:
                callees.append(callee)
                returns.append(ret)
            call_offsets.append(len(callees))
            eps_targets.extend(node.eps)
            eps_offsets.append(len(eps_targets))
            finals.append(int(node.is_final))
            low, high, item = node.counter if node.counter is not None else (0, -1, -1)
            counter_low.append(min(low, MAX_COMPILED_COUNT))
            counter_high.append(-1 if high is None else min(high, MAX_COMPILED_COUNT))
            counter_item.append(item)
        return Network(
            lexeme_offsets,
            lexemes,
            lexeme_targets,
            call_offsets,
            callees,
            returns,
            eps_offsets,
            eps_targets,
            finals,
            counter_low,
            counter_high,
            counter_item,
        )

    # ------------------------------------------------------------------------------------------
    # Configurations
    # ------------------------------------------------------------------------------------------
    @property
    def num_nodes(self) -> int:
        """Nodes of the network."""
        return len(self.network.finals)

    @property
    def is_compiled(self) -> bool:
        """Whether the configurations run compiled (`grammars.core._parser`)."""
        return self._compiled is not None

    @property
    def num_frames(self) -> int:
        """Stack frames held by all configurations (budget: MAX_FRAMES)."""
        return self._compiled.num_frames() if self._compiled is not None else self._num_frames

    @property
    def compiled_bytes(self) -> int:
        """Bytes the compiled configurations hold outside Python's allocator (0 in Python)."""
        return 0 if self._compiled is None else self._compiled.held_bytes()

    @property
    def configs(self) -> list[frozenset[Stack]]:
        """Every configuration's stacks, by id (built afresh when compiled: for inspection)."""
        if self._compiled is not None:
            return [self.stacks(config) for config in range(self._compiled.num_configs())]
        return list(self._configs)

    def stacks(self, config: int) -> frozenset[Stack]:
        """The stacks of `config`: tuples of (node, count) frames, bottom first."""
        if self._compiled is not None:
            return self._compiled.stacks(config)
        return self._configs[config]

    def is_accepting(self, config: int) -> bool:
        """Whether the input may end in `config`."""
        if self._compiled is not None:
            return self._compiled.accepting(config)
        return self._accepting[config]

    def allowed_lexemes(self, config: int) -> tuple[int, ...]:
        """Indices (into `lexeme_terms`) of the lexemes some stack of `config` can consume next."""
        if self._compiled is not None:
            return self._compiled.allowed(config)
        return self._allowed[config]

    @property
    def steps(
        self,
    ) -> tuple[Callable[[int, int], int | None], Callable[[list[int]], int], Callable[[int], tuple[int, ...]]]:
        """(advance, join, allowed_lexemes) as callables: the compiled configurations' own methods where
        they are compiled (what the compiled settle calls, with no Python frame per call), else these."""
        if self._compiled is not None:
            return self._compiled.advance, self._compiled.join, self._compiled.allowed
        return self.advance, self.join, self.allowed_lexemes

    def advance(self, config: int, lexeme: int) -> int | None:
        """The configuration after consuming `lexeme`, or None if no stack can consume it."""
        if self._compiled is not None:
            return self._compiled.advance(config, lexeme)
        key = (config, lexeme)
        if key in self._advance_cache:
            return self._advance_cache[key]
        stacks: list[Stack] = []
        for stack in self._configs[config]:
            node, count = stack[-1]
            for target in self._nodes[node].lexemes.get(lexeme, ()):
                stacks.append(stack[:-1] + ((target, count),))
        result = self._config_of(stacks) if stacks else None
        if result is not None and not self._configs[result] and not self._accepting[result]:
            result = None
        self._advance_cache[key] = result
        return result

    def join(self, configs: list[int]) -> int:
        """The configuration holding the stacks of all `configs` (an ambiguous lexeme: several terminals)."""
        if self._compiled is not None:
            return self._compiled.join(configs)
        if len(configs) == 1:
            return configs[0]
        stacks_key = frozenset().union(*(self._configs[c] for c in configs))
        return self._register(stacks_key, any(self._accepting[c] for c in configs))

    def _config_of(self, stacks: list[Stack]) -> int:
        normalized: set[Stack] = set()
        accepting = False
        for stack in stacks:
            expanded, accepts = self._expand(stack)
            normalized |= expanded
            accepting = accepting or accepts
        if len(normalized) > MAX_STACKS_PER_CONFIG:
            raise ConstraintLimitError(TOO_MANY_STACKS.format(MAX_STACKS_PER_CONFIG))
        return self._register(frozenset(normalized), accepting)

    def _register(self, stacks_key: frozenset[Stack], accepting: bool) -> int:
        key = (stacks_key, accepting)
        config = self._config_ids.get(key)
        if config is None:
            with self._register_lock:
                config = self._config_ids.get(key)
                if config is None:
                    self._num_frames += sum(map(len, stacks_key))
                    if self._num_frames > MAX_FRAMES:
                        raise ConstraintLimitError(TOO_MANY_FRAMES.format(MAX_FRAMES))
                    self._configs.append(stacks_key)
                    self._accepting.append(accepting)
                    self._allowed.append(
                        tuple(sorted({lx for stack in stacks_key for lx in self._nodes[stack[-1][0]].lexemes}))
                    )
                    config = len(self._configs) - 1
                    self._config_ids[key] = config
        return config

    def _expand(self, start: Stack) -> tuple[frozenset[Stack], bool]:
        """All stacks reachable from `start` without consuming input whose top node consumes a
        lexeme, and whether the input can end here."""
        cached = self._expand_cache.get(start)
        if cached is not None:
            return cached
        result: set[Stack] = set()
        accepting = False
        seen = {start}
        work = [start]
        nodes, closure, is_tail = self._nodes, self._closure, self._is_tail
        steps = 0
        while work:
            stack = work.pop()
            steps += 1
            if steps > MAX_EXPANSION_STEPS or len(stack) > MAX_STACK_DEPTH:
                raise ConstraintLimitError(TOO_DEEP)
            top, count = stack[-1]
            base = stack[:-1]
            successors: list[Stack] = []
            for m in closure(top):
                node = nodes[m]
                if node.lexemes:
                    result.add(base + ((m, count),))
                for callee, ret in node.calls:
                    successors.append(base + ((callee, 0),) if is_tail(ret) else base + ((ret, count), (callee, 0)))
                finishes = node.is_final
                if node.counter is not None:
                    low, high, item = node.counter
                    finishes = count >= low
                    if high is None or count < high:
                        next_count = count + 1 if high is not None else min(count + 1, low)
                        successors.append(base + ((m, next_count), (item, 0)))
                if finishes:
                    if base:
                        successors.append(base)
                    else:
                        accepting = True
            for nxt in successors:
                if nxt not in seen:
                    seen.add(nxt)
                    work.append(nxt)
        value = (frozenset(result), accepting)
        if len(self._expand_cache) >= MAX_CACHED_EXPANSIONS:
            self._expand_cache.clear()
        self._expand_cache[start] = value
        return value

    # ------------------------------------------------------------------------------------------
    # Shortest completions (for `grammars.core.completion`)
    # ------------------------------------------------------------------------------------------
    def rule_completion_lengths(self, lexeme_lengths: list[float]) -> list[float]:
        """Per node, the fewest bytes that finish the rule it belongs to (`math.inf`: none can),
        given the shortest string of each lexeme; a counter node counts its `min` items.

        A fixed point by relaxation: sweeping backwards follows the build order of most rules, so a
        sweep settles whole sequences and the loop runs about as often as rules nest.
        """
        net = self.network
        lengths = [0.0 if final else math.inf for final in net.finals]
        changed = True
        while changed:
            changed = False
            for index in range(len(lengths) - 1, -1, -1):
                best = lengths[index]
                item = net.counter_item[index]
                if item >= 0:
                    best = min(best, net.counter_low[index] * lengths[item])
                for edge in range(net.lexeme_offsets[index], net.lexeme_offsets[index + 1]):
                    best = min(best, lexeme_lengths[net.lexemes[edge]] + lengths[net.lexeme_targets[edge]])
                for edge in range(net.call_offsets[index], net.call_offsets[index + 1]):
                    best = min(best, lengths[net.callees[edge]] + lengths[net.returns[edge]])
                for edge in range(net.eps_offsets[index], net.eps_offsets[index + 1]):
                    best = min(best, lengths[net.eps_targets[edge]])
                if best < lengths[index]:
                    lengths[index] = best
                    changed = True
        return lengths

    def stack_completion_length(self, stack: Stack, node_lengths: list[float]) -> float:
        """The fewest bytes that empty `stack`: every frame finishes its rule (a counter frame its
        missing items), given `rule_completion_lengths`."""
        net = self.network
        total = 0.0
        for node, count in stack:
            item = net.counter_item[node]
            if item < 0:
                total += node_lengths[node]
            else:
                total += max(0, net.counter_low[node] - count) * node_lengths[item]
        return total
