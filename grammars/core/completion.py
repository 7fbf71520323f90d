"""Shortest completions: how many bytes an automaton state needs, at least, to end a sentence.

Length-aware masks (`grammars.masking.masks.MaskTable.budget_allowed`) keep only the tokens after
which a complete sentence still fits the generation's remaining budget; this module supplies the
length. It is computed structurally, never by searching the language:

- a lexeme term's shortest string (`min_term_len`): sums over concatenations, minima over unions,
  `lo` copies of a counter. Intersections and complements count as their longest plain operand
  and as 0 or 1 byte: a lower bound;
- a parser node's shortest way to finish its rule (`Parser.rule_completion_lengths`): a fixed
  point over the rule network, computed once per automaton, with a counter frame needing its
  missing items;
- a configuration's: the cheapest of its stacks, each frame adding the rest of its rule;
- a state inside a lexeme: the cheapest of its live terminals, each the rest of the terminal plus
  the configuration after it.

The result is a lower bound of the true shortest completion, and equals it when adjacent lexemes
of the shortest sentence never merge under greedy lexing (true of every JSON grammar we generate:
their lexemes are delimited; a Lark grammar whose shortest sentence puts two names side by side
with the separating whitespace ignored is counted one byte short per such pair). A lower bound is
the safe side: a token is only ever removed when no sentence can fit after it.

Given a vocabulary (`TokenCounter`), the same structure counts tokens instead: each lexeme costs
the fewer of its shortest string's bytes (each a token of its own) and the fewest tokens that write
one of its byte-shortest strings, when it has at most MAX_SHORTEST_STRINGS of them (a property
name, a keyword, an enum's shortest value: `"datacentreTier"` is 4 tokens, not 16 bytes). It stays
a guarantee, because the count never gets stuck: the first token of that tokenization leaves a
derivative whose byte-shortest strings are exactly the suffixes of the lexeme's that start with
it, so the rest costs one token less; a byte-count lexeme loses a byte (one token) the same way.
Whenever a state costs n > 0, some allowed token leads to a state that costs at most n - 1.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from grammars.core import byte_regex as rx

if TYPE_CHECKING:
    from grammars.core.automaton import GrammarAutomaton, State

#: Entries kept in the per-configuration and per-state memos before they are cleared.
MAX_MEMO_ENTRIES = 200_000
#: Most byte-shortest strings of a lexeme that `TokenCounter` tokenizes; a lexeme with more (a
#: string with `minLength`, say) is counted in bytes.
MAX_SHORTEST_STRINGS = 16

_TERM_LENGTHS: dict[tuple[int, int], float] = {}
_SHORTEST: dict[int, frozenset[bytes] | None] = {}


def min_term_len(term: rx.Term, alphabet: int = rx.ALL_BYTES) -> float:
    """The length of the shortest string of bytes in `alphabet` (a 256-bit mask) that `term`
    matches (a lower bound for intersections and complements); `math.inf` for none."""
    key = (alphabet, term.id)
    found = _TERM_LENGTHS.get(key)
    if found is not None:
        return found
    kind, args = term.kind, term.args
    result: float
    if kind == rx.K_EMPTY:
        result = math.inf
    elif kind == rx.K_EPS or term.nullable:
        result = 0
    elif kind == rx.K_BYTES:
        result = 1 if term.bits & alphabet else math.inf
    elif kind == rx.K_CONCAT:
        # Concatenations nest to the right, one level per item: iterate (a 3000-byte literal).
        result = 0
        chain = term
        while chain.kind == rx.K_CONCAT:
            result += min_term_len(chain.args[0], alphabet)
            chain = chain.args[1]
        result += min_term_len(chain, alphabet)
    elif kind == rx.K_ALT:
        result = min(min_term_len(a, alphabet) for a in args)
    elif kind == rx.K_REPEAT:
        result = term.lo * min_term_len(args[0], alphabet) if term.lo else 0
    elif kind == rx.K_AND:
        result = max(min_term_len(a, alphabet) for a in args)
    elif kind == rx.K_NOT:
        result = 1  # not nullable (checked above): at least one byte
    else:  # K_TAG
        result = min_term_len(args[0], alphabet)
    if len(_TERM_LENGTHS) >= MAX_MEMO_ENTRIES:
        _TERM_LENGTHS.clear()
    _TERM_LENGTHS[key] = result
    return result


def shortest_strings(term: rx.Term) -> frozenset[bytes] | None:
    """Every string of `term` as short as its shortest one, or None when there are more than
    MAX_SHORTEST_STRINGS of them or `term` has an intersection or complement (not enumerated)."""
    if term.id in _SHORTEST:
        return _SHORTEST[term.id]
    kind = term.kind
    result: frozenset[bytes] | None
    if kind == rx.K_EMPTY:
        result = frozenset()
    elif term.nullable:
        result = frozenset((b"",))
    elif kind == rx.K_BYTES:
        result = frozenset(bytes((b,)) for b in rx.iter_bytes(term.bits)) if _fits(term.bits.bit_count()) else None
    elif kind == rx.K_CONCAT:
        parts = []
        chain = term
        while chain.kind == rx.K_CONCAT:
            parts.append(chain.args[0])
            chain = chain.args[1]
        parts.append(chain)
        result = _product([shortest_strings(part) for part in parts])
    elif kind == rx.K_ALT:
        least = min(min_term_len(a) for a in term.args)
        members = _known([shortest_strings(a) for a in term.args if min_term_len(a) == least])
        result = None if members is None else frozenset[bytes]().union(*members)
        if result is not None and not _fits(len(result)):
            result = None
    elif kind == rx.K_REPEAT:
        result = _product([shortest_strings(term.args[0])] * term.lo)
    elif kind == rx.K_TAG:
        result = shortest_strings(term.args[0])
    else:  # K_AND, K_NOT
        result = None
    if len(_SHORTEST) >= MAX_MEMO_ENTRIES:
        _SHORTEST.clear()
    _SHORTEST[term.id] = result
    return result


def _fits(count: int) -> bool:
    return count <= MAX_SHORTEST_STRINGS


def _known(parts: list[frozenset[bytes] | None]) -> list[frozenset[bytes]] | None:
    """`parts`, or None when one of them is not enumerated."""
    known = [part for part in parts if part is not None]
    return known if len(known) == len(parts) else None


def _product(parts: list[frozenset[bytes] | None]) -> frozenset[bytes] | None:
    """The concatenations of one string of each part, or None past MAX_SHORTEST_STRINGS."""
    known = _known(parts)
    if known is None:
        return None
    sizes = [len(part) for part in known]
    if 0 in sizes:
        return frozenset()
    if not _fits(math.prod(sizes)):
        return None
    return frozenset(b"".join(combo) for combo in itertools.product(*known))


class TokenCounter:
    """Counts lexemes in the tokens of one vocabulary (see the module docstring).

    Args:
        token_bytes: each token id's bytes (None for special tokens), as `Vocabulary.token_bytes`.
        alphabet: the bytes that are tokens of their own (256-bit mask), for lexemes counted in bytes.
    """

    def __init__(self, token_bytes: Sequence[bytes | None], alphabet: int) -> None:
        self._tokens = frozenset(data for data in token_bytes if data)
        self._max_token_len = max(map(len, self._tokens), default=1)
        self.alphabet = alphabet
        self._costs: dict[int, float] = {}
        self._texts: dict[bytes, float] = {}

    def term_cost(self, term: rx.Term) -> float:
        """Tokens that write a string of `term` (an upper bound, `math.inf` for none; byte-exact
        for terms not enumerated, see `shortest_strings`)."""
        found = self._costs.get(term.id)
        if found is None:
            found = min_term_len(term, self.alphabet)
            strings = shortest_strings(term)
            if strings:
                found = min(found, min(self.text_cost(text) for text in strings))
            if len(self._costs) >= MAX_MEMO_ENTRIES:
                self._costs.clear()
            self._costs[term.id] = found
        return found

    def text_cost(self, text: bytes) -> float:
        """The fewest tokens whose bytes concatenate to `text` (`math.inf` when none do)."""
        found = self._texts.get(text)
        if found is None:
            fewest = [0.0] + [math.inf] * len(text)  # fewest[i]: tokens that write text[:i]
            for end in range(1, len(text) + 1):
                for start in range(max(0, end - self._max_token_len), end):
                    if fewest[start] + 1 < fewest[end] and text[start:end] in self._tokens:
                        fewest[end] = fewest[start] + 1
            found = fewest[-1]
            if len(self._texts) >= MAX_MEMO_ENTRIES:
                self._texts.clear()
            self._texts[text] = found
        return found


@functools.lru_cache(maxsize=4)
def token_counter(token_bytes: tuple[bytes | None, ...], alphabet: int) -> TokenCounter:
    """The shared `TokenCounter` of a vocabulary (its memos serve every grammar)."""
    return TokenCounter(token_bytes, alphabet)


class CompletionLengths:
    """Shortest completion of the states of one automaton (see the module docstring): in bytes,
    or with `tokens`, in tokens.

    Args:
        automaton: the automaton whose states are measured.
        alphabet: the bytes a completion may use (256-bit mask): a vocabulary's single-byte tokens,
            so that a completion of n bytes is n tokens at most. Ignored with `tokens`.
        tokens: count in the tokens of this vocabulary (a tighter bound of the tokens a completion
            needs; still one that never gets stuck).
    """

    def __init__(
        self, automaton: GrammarAutomaton, alphabet: int = rx.ALL_BYTES, tokens: TokenCounter | None = None
    ) -> None:
        self._automaton = automaton
        self._alphabet = alphabet
        self._tokens = tokens
        parser = automaton.parser
        self._node_lengths = parser.rule_completion_lengths([self._term_cost(t) for t in parser.lexeme_terms])
        self._configs: dict[int, float] = {}
        self._states: dict[State, float] = {}

    def of_state(self, state: State) -> float:
        """Bytes (or tokens) the shortest sentence needs after `state` (0 when it may end now; `math.inf` when
        none can).

        Raises:
            ConstraintLimitError: the parser's budget, while advancing it past a terminal.
        """
        found = self._states.get(state)
        if found is None:
            config, sid = state
            if sid is None:
                found = self.of_config(config)
            else:
                found = self._inside_lexeme(config, sid)
            if len(self._states) >= MAX_MEMO_ENTRIES:
                self._states.clear()
            self._states[state] = found
        return found

    def of_config(self, config: int) -> float:
        """Bytes (or tokens) the shortest sentence needs after a lexeme boundary in `config`."""
        found = self._configs.get(config)
        if found is None:
            parser = self._automaton.parser
            if parser.is_accepting(config):
                found = 0
            else:
                found = min(
                    (parser.stack_completion_length(stack, self._node_lengths) for stack in parser.stacks(config)),
                    default=math.inf,
                )
            if len(self._configs) >= MAX_MEMO_ENTRIES:
                self._configs.clear()
            self._configs[config] = found
        return found

    def _inside_lexeme(self, config: int, sid: int) -> float:
        automaton = self._automaton
        best = math.inf
        for tag, rest in rx.tags_of(automaton.lexer.terms[sid]):
            rest_length = self._term_cost(rest)
            if rest_length >= best:
                continue
            after = automaton.config_after_terminal(config, tag)
            if after is not None:
                best = min(best, rest_length + self.of_config(after))
        return best

    def _term_cost(self, term: rx.Term) -> float:
        if self._tokens is None:
            return min_term_len(term, self._alphabet)
        return self._tokens.term_cost(term)
