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

The grammar must be normalized (`grammars.core.normalize`): no left recursion, non-nullable lexemes.
"""

from __future__ import annotations

import math
import threading

from grammars.core import byte_regex as rx
from grammars.core import ir
from grammars.core.analysis import check_no_left_recursion
from grammars.core.budget import Check, no_check
from grammars.errors import ConstraintLimitError

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

Frame = tuple[int, int]  # (node, repetition count)
Stack = tuple[Frame, ...]


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


class Parser:
    """Configurations, transitions and acceptance of one grammar's recursive transition network.

    Args:
        grammar: a normalized grammar.
        check: called per rule while building (a compile deadline).
    Raises:
        GrammarError: left recursion through several rules.
        ConstraintLimitError: the network would exceed MAX_NODES, or from `check`.
    """

    def __init__(self, grammar: ir.Grammar, check: Check = no_check) -> None:
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
        # Configurations, hash-consed.
        self._config_ids: dict[tuple[frozenset[Stack], bool], int] = {}
        self.configs: list[frozenset[Stack]] = []
        self.accepting: list[bool] = []
        self._allowed: list[tuple[int, ...]] = []
        self._advance_cache: dict[tuple[int, int], int | None] = {}
        self._expand_cache: dict[Stack, tuple[frozenset[Stack], bool]] = {}
        self._register_lock = threading.Lock()
        self.num_frames = 0
        self.initial = self._config_of([((self._rule_start[grammar.start], 0),)])

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

    # ------------------------------------------------------------------------------------------
    # Configurations
    # ------------------------------------------------------------------------------------------
    def allowed_lexemes(self, config: int) -> tuple[int, ...]:
        """Indices (into `lexeme_terms`) of the lexemes some stack of `config` can consume next."""
        return self._allowed[config]

    def advance(self, config: int, lexeme: int) -> int | None:
        """The configuration after consuming `lexeme`, or None if no stack can consume it."""
        key = (config, lexeme)
        if key in self._advance_cache:
            return self._advance_cache[key]
        stacks: list[Stack] = []
        for stack in self.configs[config]:
            node, count = stack[-1]
            for target in self._nodes[node].lexemes.get(lexeme, ()):
                stacks.append(stack[:-1] + ((target, count),))
        result = self._config_of(stacks) if stacks else None
        if result is not None and not self.configs[result] and not self.accepting[result]:
            result = None
        self._advance_cache[key] = result
        return result

    def join(self, configs: list[int]) -> int:
        """The configuration holding the stacks of all `configs` (an ambiguous lexeme: several terminals)."""
        if len(configs) == 1:
            return configs[0]
        stacks_key = frozenset().union(*(self.configs[c] for c in configs))
        return self._register(stacks_key, any(self.accepting[c] for c in configs))

    def _config_of(self, stacks: list[Stack]) -> int:
        normalized: set[Stack] = set()
        accepting = False
        for stack in stacks:
            expanded, accepts = self._expand(stack)
            normalized |= expanded
            accepting = accepting or accepts
        if len(normalized) > MAX_STACKS_PER_CONFIG:
            raise ConstraintLimitError(
                f"the parser tracks more than {MAX_STACKS_PER_CONFIG} stacks (a very ambiguous grammar)"
            )
        return self._register(frozenset(normalized), accepting)

    def _register(self, stacks_key: frozenset[Stack], accepting: bool) -> int:
        key = (stacks_key, accepting)
        config = self._config_ids.get(key)
        if config is None:
            with self._register_lock:
                config = self._config_ids.get(key)
                if config is None:
                    self.num_frames += sum(map(len, stacks_key))
                    if self.num_frames > MAX_FRAMES:
                        raise ConstraintLimitError(
                            f"the parser exceeded its budget of {MAX_FRAMES} stack frames (a very ambiguous grammar)"
                        )
                    self.configs.append(stacks_key)
                    self.accepting.append(accepting)
                    self._allowed.append(
                        tuple(sorted({lx for stack in stacks_key for lx in self._nodes[stack[-1][0]].lexemes}))
                    )
                    config = len(self.configs) - 1
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
                raise ConstraintLimitError("the parser's stack exceeded its budget (nesting too deep)")
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
        nodes = self._nodes
        lengths = [0.0 if node.is_final else math.inf for node in nodes]
        changed = True
        while changed:
            changed = False
            for index in range(len(nodes) - 1, -1, -1):
                node = nodes[index]
                best = lengths[index]
                if node.counter is not None:
                    low, _, item = node.counter
                    best = min(best, low * lengths[item])
                for lexeme, targets in node.lexemes.items():
                    for target in targets:
                        best = min(best, lexeme_lengths[lexeme] + lengths[target])
                for callee, ret in node.calls:
                    best = min(best, lengths[callee] + lengths[ret])
                for target in node.eps:
                    best = min(best, lengths[target])
                if best < lengths[index]:
                    lengths[index] = best
                    changed = True
        return lengths

    def stack_completion_length(self, stack: Stack, node_lengths: list[float]) -> float:
        """The fewest bytes that empty `stack`: every frame finishes its rule (a counter frame its
        missing items), given `rule_completion_lengths`."""
        total = 0.0
        for node, count in stack:
            counter = self._nodes[node].counter
            if counter is None:
                total += node_lengths[node]
            else:
                low, _, item = counter
                total += max(0, low - count) * node_lengths[item]
        return total
