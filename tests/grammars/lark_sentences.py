"""Random sentences of an IR grammar and random mutations of text, for cross-checking against Lark.

Sentences are drawn top-down with a depth budget: past `max_depth` every choice takes the cheapest
way out (precomputed per rule), so generation always ends. A lexeme's text is a random walk over the
derivatives of its term, finished by the shortest completion once it is long enough. Lexemes are
joined by a single space when the grammar ignores spaces, so that the sentence's tokenization is
the one it was generated with.
"""

from __future__ import annotations

import math
import random

from grammars.core import byte_regex as rx
from grammars.core import ir
from grammars.core.automaton import GrammarAutomaton
from grammars.core.lexer import is_empty_language

#: Bytes a walk prefers inside a byte class (readable text; other bytes are taken when none fits).
PRINTABLE = frozenset(range(0x20, 0x7F))
#: Characters inserted or substituted by mutations.
MUTATION_CHARS = "()[]{}\"',;:.=+-*/\\ \nabcXYZ019_#"


class SentenceGenerator:
    """Random sentences of one grammar.

    Args:
        grammar: the IR grammar.
        rng: the source of randomness (seeded by the caller).
        max_depth: rule nesting after which choices take the cheapest option.
        max_lexeme_bytes: length after which a lexeme's walk heads for its shortest completion.
    """

    def __init__(self, grammar: ir.Grammar, rng: random.Random, max_depth: int = 6, max_lexeme_bytes: int = 8) -> None:
        self.grammar = grammar
        self.rng = rng
        self.max_depth = max_depth
        self.max_lexeme_bytes = max_lexeme_bytes
        self.separator = b" " if any(rx.matches(t, b" ") for t in grammar.ignore) else b""
        self._cost = _rule_costs(grammar.rules)

    def sentence(self) -> str | None:
        """A random sentence, or None when a lexeme walk got stuck or the bytes are not UTF-8."""
        pieces: list[bytes] = []
        if not self._expand(ir.Ref(self.grammar.start), 0, pieces):
            return None
        try:
            return self.separator.join(p for p in pieces if p).decode("utf-8")
        except UnicodeDecodeError:
            return None

    def _expand(self, expr: ir.Expr, depth: int, out: list[bytes]) -> bool:
        if isinstance(expr, ir.Lexeme):
            text = self.lexeme_text(expr.term)
            if text is None:
                return False
            out.append(text)
            return True
        if isinstance(expr, ir.Ref):
            return self._expand(self.grammar.rules[expr.name], depth + 1, out)
        if isinstance(expr, ir.Seq):
            return all(self._expand(item, depth, out) for item in expr.items)
        if isinstance(expr, ir.Alt):
            options = [o for o in expr.options if _cost(o, self._cost) < math.inf]
            if depth > self.max_depth:
                options = [min(options, key=lambda o: _cost(o, self._cost))]
            return self._expand(self.rng.choice(options), depth, out)
        high = expr.min + 2 if expr.max is None else min(expr.max, expr.min + 2)
        count = expr.min if depth > self.max_depth else self.rng.randint(expr.min, high)
        return all(self._expand(expr.item, depth, out) for _ in range(count))

    def lexeme_text(self, term: rx.Term) -> bytes | None:
        """A random string of `term`'s language (None if the walk cannot finish)."""
        out = bytearray()
        while len(out) < self.max_lexeme_bytes:
            if term.nullable and out and self.rng.random() < 0.35:
                return bytes(out)
            # sorted: the order of derivative classes depends on term ids, i.e. on what ran before
            classes = sorted(rx.derivative_classes(term))
            live = [c for c in classes if not is_empty_language(rx.derivative(term, rx.lowest_byte(c)))]
            if not live:
                break
            byte_class = self.rng.choice(live)
            members = list(rx.iter_bytes(byte_class))
            readable = [b for b in members if b in PRINTABLE]
            byte = self.rng.choice(readable or members)
            out.append(byte)
            term = rx.derivative(term, byte)
        completion = shortest_completion(term)
        return None if completion is None else bytes(out) + completion


def shortest_completion(term: rx.Term, max_states: int = 5000) -> bytes | None:
    """The shortest bytes taking `term` to an accepting state (breadth-first over derivatives)."""
    frontier = [(term, b"")]
    seen = {term.id}
    while frontier and len(seen) < max_states:
        next_frontier = []
        for current, path in frontier:
            if current.nullable:
                return path
            for byte_class in sorted(rx.derivative_classes(current)):
                members = list(rx.iter_bytes(byte_class))
                byte = next((b for b in members if b in PRINTABLE), members[0])
                successor = rx.derivative(current, byte)
                if successor is not rx.EMPTY and successor.id not in seen:
                    seen.add(successor.id)
                    next_frontier.append((successor, path + bytes([byte])))
        frontier = next_frontier
    return None


def mutations(text: str, rng: random.Random, count: int) -> list[str]:
    """`count` random one-character edits of `text` (delete, insert or replace), all different from it."""
    result: list[str] = []
    while len(result) < count:
        position = rng.randrange(len(text) + 1)
        kind = rng.choice(("delete", "insert", "replace")) if text else "insert"
        char = rng.choice(MUTATION_CHARS)
        if kind == "insert":
            mutated = text[:position] + char + text[position:]
        elif position == len(text):
            continue
        elif kind == "delete":
            mutated = text[:position] + text[position + 1 :]
        else:
            mutated = text[:position] + char + text[position + 1 :]
        if mutated != text:
            result.append(mutated)
    return result


def _rule_costs(rules: dict[str, ir.Expr]) -> dict[str, float]:
    """Per rule, the fewest lexemes a derivation needs (infinite for rules that never finish)."""
    cost = {name: math.inf for name in rules}
    changed = True
    while changed:
        changed = False
        for name, expr in rules.items():
            value = _cost(expr, cost)
            if value < cost[name]:
                cost[name] = value
                changed = True
    return cost


def _cost(expr: ir.Expr, cost: dict[str, float]) -> float:
    if isinstance(expr, ir.Lexeme):
        return 1
    if isinstance(expr, ir.Ref):
        return cost[expr.name]
    if isinstance(expr, ir.Seq):
        return sum(_cost(item, cost) for item in expr.items)
    if isinstance(expr, ir.Alt):
        return min((_cost(o, cost) for o in expr.options), default=math.inf)
    return 0 if expr.min == 0 else expr.min * _cost(expr.item, cost)


def rejected_by_greedy_lexing(automaton: GrammarAutomaton, text: str, max_early_ends: int = 6) -> bool:
    """Whether `automaton` rejects `text` only because its lexer is greedy: ending up to
    `max_early_ends` lexemes earlier, at points where they were already complete, makes it a sentence.

    Our lexer extends a lexeme while the next byte allows (`grammars.core.automaton`, no backtracking);
    Lark's Earley "dynamic" lexer tries every split, so it also finds `WHERE x` in `WHEREx` or a
    regex after `" /"` where a comment `/\\s*/ "//"` started. Such a text is that documented
    difference, not a translation error.
    """
    data = text.encode("utf-8")
    return not automaton.accepts(data) and _accepts_ending_early(automaton, automaton.initial, data, max_early_ends)


def _accepts_ending_early(automaton: GrammarAutomaton, state: tuple, data: bytes, budget: int) -> bool:
    for index, byte in enumerate(data):
        config, sid = state
        if budget and sid is not None and automaton.lexer.accepting[sid]:
            ended = automaton.end_lexeme(config, sid)
            if ended is not None and _accepts_ending_early(automaton, (ended, None), data[index:], budget - 1):
                return True
        following = automaton.walk(state, bytes([byte]))
        if following is None:
            return False
        state = following
    return automaton.can_end(state)
