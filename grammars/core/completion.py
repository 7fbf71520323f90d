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
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from grammars.core import byte_regex as rx

if TYPE_CHECKING:
    from grammars.core.automaton import GrammarAutomaton, State

#: Entries kept in the per-configuration and per-state memos before they are cleared.
MAX_MEMO_ENTRIES = 200_000

_TERM_LENGTHS: dict[tuple[int, int], float] = {}


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


class CompletionLengths:
    """Shortest completion, in bytes, of the states of one automaton (see the module docstring).

    Args:
        automaton: the automaton whose states are measured.
        alphabet: the bytes a completion may use (256-bit mask): a vocabulary's single-byte tokens,
            so that a completion of n bytes is n tokens at most.
    """

    def __init__(self, automaton: GrammarAutomaton, alphabet: int = rx.ALL_BYTES) -> None:
        self._automaton = automaton
        self._alphabet = alphabet
        parser = automaton.parser
        self._node_lengths = parser.rule_completion_lengths([min_term_len(t, alphabet) for t in parser.lexeme_terms])
        self._configs: dict[int, float] = {}
        self._states: dict[State, float] = {}

    def of_state(self, state: State) -> float:
        """Bytes the shortest sentence needs after `state` (0 when it may end now; `math.inf` when
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
        """Bytes the shortest sentence needs after a lexeme boundary in `config`."""
        found = self._configs.get(config)
        if found is None:
            parser = self._automaton.parser
            if parser.accepting[config]:
                found = 0
            else:
                found = min(
                    (parser.stack_completion_length(stack, self._node_lengths) for stack in parser.configs[config]),
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
            rest_length = min_term_len(rest, self._alphabet)
            if rest_length >= best:
                continue
            after = automaton.config_after_terminal(config, tag)
            if after is not None:
                best = min(best, rest_length + self.of_config(after))
        return best
