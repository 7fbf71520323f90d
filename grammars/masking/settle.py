"""Settling boundary tokens: which tokens that end a lexeme the grammar accepts.

A whole-vocabulary walk from a lexer state (`token_walk.walk_state`) leaves the tokens that end
the current lexeme mid-token grouped by (lexer state before the ending byte, position); where that
lexeme may end before the token, the tokens whose first byte cannot extend it are one more group,
at position 0 (`GroupSettler.ending_group`). For a group, the
parser takes the lexeme (`GrammarAutomaton.end_lexeme`), the next lexeme starts
(`lexer_start`), and the group's tokens are walked on from there (`token_walk.walk_group`): those
still inside a lexeme at their end are accepted, and those that end this lexeme too form nested
groups, settled the same way. A fresh lexeme consumes a byte before it can end, so the recursion
ends within the token.

A new mask is assembled here (`GroupSettler.assemble`): the walk's inside tokens, the boundary
tokens accepted, and EOS where the text may end, as the bits that identify it (`token_bits`). The
compiled settle (`_walk.settle`) runs all of it in one call, setting the mask's bits directly: it
takes lexemes on the parser's own steps (`Parser.steps`), memoized per automaton, and asks Python only what
ends in a lexer state new to it and the lexeme start of a new set of allowed lexemes; group walks are
kept per vocabulary, and each has the lexer transitions it lacks written in place as the vocabulary
walk does (a filler of its own, under the lexer's lock: Python calls between walks may grow the
tables). `assemble_reference` is the Python settle it must agree with, used when the
extension is missing (then groups hold token rows, not trie nodes).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from types import ModuleType
from typing import NamedTuple

import numpy as np

from grammars.core.automaton import GrammarAutomaton
from grammars.core.budget import Check, no_check
from grammars.masking import token_bits, token_walk
from grammars.masking.token_walk import GroupKey, StateWalk, row_filler, token_trie, walk_group
from grammars.masking.vocab import Vocabulary

_NO_ROWS = np.zeros(0, dtype=np.int64)
#: Lexer states whose `GroupSettler.ending_group` a vocabulary keeps.
MAX_CACHED_ENDING_GROUPS = 1024
#: Guards the compiled caches (per vocabulary and per automaton) during a compiled settle.
_compiled_lock = threading.Lock()


class GroupSettler:
    """Settles the boundary groups of state walks for one automaton over one vocabulary."""

    def __init__(self, automaton: GrammarAutomaton, vocab: Vocabulary) -> None:
        self.automaton = automaton
        self.vocab = vocab
        #: The compiled settle's arguments that stay the same from call to call (`_settle_arguments`).
        self._arguments: _SettleArguments | None = None
        self._eos_ids = tuple(vocab.eos_token_ids)
        #: `ending_group` per (lexer generation, lexer state, whether its members are rows), kept by the
        #: vocabulary: it depends on the lexer state alone, and most schemas end lexemes in states other
        #: schemas met (237 of a corpus pass's 287 were).
        self._ending_groups: dict[tuple[int, int, bool], tuple[int, int, np.ndarray]] = vocab.__dict__.setdefault(
            "_ending_groups", {}
        )

    def assemble(
        self, walk: StateWalk, config: int, ending: int | None, may_end: bool, check: Check
    ) -> tuple[int, bytes]:
        """A new mask, as `token_bits.identity` gives it: `walk`'s inside tokens, the tokens of its
        boundary groups (ending a lexeme after `config`) that the grammar accepts, and where `ending`
        is a lexer state (the one the mask is made in, whose lexeme may end there) those of
        `ending_group`; the vocabulary's EOS where `may_end`, else none. Compiled when the extension
        is built.

        Raises:
            ConstraintLimitError: `check` stopped a walk (nothing half-walked is cached).
        """
        if token_walk.native_walk is None:
            return self.assemble_reference(walk, config, ending, may_end, check)
        return self.assemble_compiled(walk, config, ending, may_end, check)

    def assemble_compiled(
        self, walk: StateWalk, config: int, ending: int | None, may_end: bool, check: Check
    ) -> tuple[int, bytes]:
        """`assemble` in one compiled call (the walk's groups must hold trie nodes)."""
        native = token_walk.native_walk
        if native is None:
            raise RuntimeError("grammars.masking._walk is not built (scripts/install.sh builds it)")
        groups, origins = self._groups(walk, ending, check)
        arguments = self._arguments or self._settle_arguments(native)
        lexer = self.automaton.lexer
        if check is no_check:
            steps, fill, make_filler = arguments.steps, arguments.fill, arguments.make_filler
        else:
            steps, fill, make_filler = self._steps(check), row_filler(lexer, check), partial(lexer.walk_filler, check)
        with _compiled_lock, lexer.lock:  # the fillers write the tables of now
            return native.settle(
                arguments.settler,
                walk.inside_bits,
                self._eos_ids,
                may_end,
                config,
                (arguments.generation, walk.inside_of),
                groups,
                origins,
                steps,
                fill,
                make_filler,
            )

    def _groups(self, walk: StateWalk, ending: int | None, check: Check) -> tuple[tuple, tuple[int, ...]]:
        """`walk`'s boundary groups and their origins, with `ending_group` where `ending` is a state."""
        if ending is None:
            return walk.boundaries, walk.origins
        group = self.ending_group(ending, check)
        if not group[2].size:
            return walk.boundaries, walk.origins
        return (*walk.boundaries, group), (*walk.origins, ending)

    def ending_group(self, sid: int, check: Check) -> tuple[int, int, np.ndarray]:
        """The boundary group at position 0 of lexer state `sid` (which accepts): the tokens whose first
        byte cannot extend its lexeme, which end it before their first byte. It is settled like the
        walk's own groups and named `(inside_of, sid, 0)` beside them (theirs lie past position 0), so
        its walk from each next lexeme's start is kept per vocabulary; joining the mask of the state
        after the lexeme instead computed that whole mask for nearly every new configuration.
        Trie nodes with the compiled walk, rows without; cached per vocabulary and lexer state.
        """
        lexer = self.automaton.lexer
        key = (lexer.generation, sid, token_walk.native_walk is None)
        found = self._ending_groups.get(key)
        if found is None:
            ends = ~lexer.live_bytes(sid, check)
            arrays = self.vocab.walk_arrays
            if token_walk.native_walk is None:
                members = arrays.rows_starting_with(ends)
            else:
                trie = token_trie(arrays)
                members = trie.first_nodes[ends[trie.first_bytes]]
            found = (sid, 0, members)
            if len(self._ending_groups) >= MAX_CACHED_ENDING_GROUPS:
                self._ending_groups.clear()
            self._ending_groups[key] = found
        return found

    def _settle_arguments(self, native: ModuleType) -> _SettleArguments:
        """What every compiled settle of this settler passes (made once: building it per call was a
        fifth of a settle's time), with the callbacks of a settle without a deadline."""
        lexer = self.automaton.lexer
        trie = token_trie(self.vocab.walk_arrays)
        with _compiled_lock:
            if self._arguments is None:  # one memo of the parser's answers per settler
                self._arguments = _SettleArguments(
                    native.new_settler(_group_walks(self.vocab, native), trie.ordered_ids, lexer.tables, trie.tables),
                    lexer.generation,
                    self._steps(no_check),
                    row_filler(lexer, no_check),
                    partial(lexer.walk_filler, no_check),
                )
            return self._arguments

    def _steps(self, check: Check) -> tuple:
        """The parser's steps the compiled settle calls (`endings_of`, `Parser.steps`, and the lexeme
        start of a configuration under `check`)."""
        automaton = self.automaton
        start = automaton.lexer_start if check is no_check else lambda ended: automaton.lexer_start(ended, check)
        return (automaton.endings_of, *automaton.parser.steps, start)

    def assemble_reference(
        self, walk: StateWalk, config: int, ending: int | None, may_end: bool, check: Check
    ) -> tuple[int, bytes]:
        """`assemble` in Python, group by group (the reference of the compiled settle)."""
        groups, origins = self._groups(walk, ending, check)
        accepted = [
            self._settle_group(config, (walk.inside_of, origin, position), before, members, check)
            for (before, position, members), origin in zip(groups, origins)
        ]
        bits = walk.inside_bits.copy()
        if accepted:
            token_bits.assign(bits, self.vocab.walk_arrays.ids[np.concatenate(accepted)], True)
        token_bits.assign(bits, list(self._eos_ids), may_end)
        return token_bits.identity(bits)

    def _settle_group(self, config: int, group: GroupKey, before: int, members: np.ndarray, check: Check) -> np.ndarray:
        """The rows of the tokens of boundary group `group` (`members`: tokens ending a lexeme in lexer
        state `before` after `config`) whose remaining bytes the grammar accepts."""
        automaton = self.automaton
        position = group[-1]
        ended = automaton.end_lexeme(config, before)
        if ended is None:
            return _NO_ROWS
        start = automaton.lexer_start(ended, check)
        walk = walk_group(self.vocab, automaton.lexer, group, start, members, position, check)
        if not walk.boundaries:
            return walk.inside_rows
        accepted = [walk.inside_rows]
        for nested_before, nested_position, nested_members in walk.boundaries:
            nested = (group, start, nested_before, nested_position)
            accepted.append(self._settle_group(ended, nested, nested_before, nested_members, check))
        return np.concatenate(accepted)


class _SettleArguments(NamedTuple):
    """`GroupSettler._settle_arguments`."""

    settler: object  # the compiled settle's fixed arguments and memo of the parser's answers
    generation: int
    steps: tuple
    fill: Callable[[list[int], list[int]], None]
    make_filler: Callable[[], object | None]


def _group_walks(vocab: Vocabulary, native: ModuleType) -> object:
    """The vocabulary's compiled cache of group walks (bounded as `walk_group`'s; under the lock)."""
    found = vocab.__dict__.get("_compiled_group_walks")
    if found is None:
        found = native.new_group_walks(token_walk.MAX_CACHED_GROUP_WALKS, token_walk.MAX_CACHED_GROUP_WALK_BYTES)
        vocab.__dict__["_compiled_group_walks"] = found
    return found
