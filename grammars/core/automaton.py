"""A grammar as a byte-level automaton: parser configuration plus lexer state.

A state is `(config, sid)`: the parser configuration after the lexemes completed so far, and the
lexer state inside the current lexeme, or `None` at a lexeme boundary. Lexing is greedy: a lexeme
ends where the next byte cannot extend it (one byte of lookahead, no backtracking), which is exact
for grammars whose terminals do not need backtracking (every JSON grammar we generate) and is the
semantics `accepts()` and the token masks share. Lexer state ids belong to the automaton's own
`lexer` generation (`grammars.core.lexer.current_lexer`): read them through `automaton.lexer`.
"""

from __future__ import annotations

import numpy as np

from grammars.core import byte_regex as rx
from grammars.core import ir
from grammars.core.budget import Budget, Check, no_check
from grammars.core.distinct_keys import Keys, initial_keys, key_spellings, overlapping_keys, walk_keyed
from grammars.core.lexer import DEAD, current_lexer
from grammars.core.normalize import normalize
from grammars.core.parser import MAX_FRAMES, Parser

State = tuple[int, int | None]
#: A memo's miss (its values may be None).
_UNKNOWN = object()

#: Entries kept in each memo before it is cleared (bounds memory on endless generations).
MAX_MEMO_ENTRIES = 500_000
#: Longest forced text `forced_bytes` returns at once (a longer forced run comes in pieces).
MAX_FORCED_BYTES = 1024
#: Positions whose forced text is kept before that memo is cleared (keyed ones hold their `Keys`).
MAX_FORCED_ENTRIES = 65_536
#: One-byte strings, by byte (the byte-by-byte walks of `forced_bytes`).
_SINGLE_BYTES = [bytes((byte,)) for byte in range(256)]

#: (lexer generation, lexeme start state, seen keys) -> the start state restricted to fresh keys
#: (`lexer_start_excluding`): it depends on lexer states alone, so every grammar of the process (a
#: server compiles one per request) shares it. Kept up to MAX_EXCLUDING_STARTS entries.
_EXCLUDING_STARTS: dict[tuple[int, int, frozenset[str]], int] = {}
MAX_EXCLUDING_STARTS = 65_536


class GrammarAutomaton:
    """Byte-level recognizer of a grammar's language, memoized for reuse across matchers.

    Args:
        grammar: any IR grammar; it is normalized here.
        budget: the deadline of building it (default: `Budget()`, MAX_COMPILE_SECONDS).
    Raises:
        EmptyLanguageError, GrammarError: see `grammars.core.normalize` and `grammars.core.parser`.
        ConstraintLimitError: the grammar exceeds a size budget or `budget`'s deadline.
    """

    def __init__(self, grammar: ir.Grammar, *, budget: Budget | None = None) -> None:
        budget = budget or Budget()
        self.lexer = current_lexer()
        normalized = normalize(grammar, budget.check)
        self.parser = Parser(normalized, budget.check)
        self._lexeme_of_tag = {term.id: index for index, term in enumerate(self.parser.lexeme_terms)}
        self._ignore_terms = normalized.ignore
        self._ignore_tags = frozenset(term.id for term in normalized.ignore)
        #: Where the output's JSON keys start being tracked (`distinct_keys`), None: never.
        self.initial_keys = (
            None
            if grammar.distinct_keys_after is None
            else initial_keys(self.lexer, grammar.distinct_keys_after, budget.check)
        )
        #: Whether an object may reach a comma with no fresh key left (`ir.Grammar.keys_may_run_out`).
        self.keys_may_run_out = grammar.keys_may_run_out
        self._start_sid: dict[int, int] = {}
        self._start_of_lexemes: dict[tuple[int, ...], int] = {}
        self._end_cache: dict[tuple[int, int], int | None] = {}
        #: Per lexer state: `endings_of`.
        self._endings: dict[int, tuple[bool, tuple[int, ...]]] = {}
        self._walk_cache: dict[tuple[State, bytes], State | None] = {}
        self._forced_cache: dict[tuple[State, Keys | None], bytes] = {}
        self.initial: State = (self.parser.initial, None)
        self.lexer_start(self.parser.initial, budget.check)  # its emptiness search, under the deadline

    @property
    def is_worn(self) -> bool:
        """Whether the parser's configurations (never forgotten: live matchers hold their ids) have
        filled half their frame budget: new matchers should start on a fresh automaton, so that many
        generations through one long-lived constraint never reach the budget for good."""
        return self.parser.num_frames > MAX_FRAMES // 2

    def lexer_start(self, config: int, check: Check = no_check) -> int:
        """The lexer state at a lexeme boundary: any lexeme the parser allows, or an ignored one."""
        sid = self._start_sid.get(config)
        if sid is None:
            # Many configurations allow the same lexemes (every field value of one type, say): their
            # start state is built once.
            allowed = self.parser.allowed_lexemes(config)
            sid = self._start_of_lexemes.get(allowed)
            if sid is None:
                terms = tuple(self.parser.lexeme_terms[i] for i in allowed)
                sid = self._start_of_lexemes[allowed] = self.lexer.start_state(terms + self._ignore_terms, check)
            self._start_sid[config] = sid
        return sid

    def lexer_start_excluding(self, config: int, seen: frozenset[str], check: Check = no_check) -> int:
        """`lexer_start(config)` with every spelling of the keys `seen` taken out of every lexeme
        (DEAD when nothing is left): how a key begins where some keys are already taken.
        Lexemes that spell none of them stay as they are, so where none does (declared keys, which
        the grammar writes once anyway) this is `lexer_start(config)` and shares its caches. Which
        lexemes spell which keys is `distinct_keys.overlapping_keys`; the restricted state is kept
        per (start state, keys), process-wide.
        """
        start = self.lexer_start(config, check)
        key = (self.lexer.generation, start, seen)
        sid = _EXCLUDING_STARTS.get(key)
        if sid is None:
            terms = tuple(self.parser.lexeme_terms[i] for i in self.parser.allowed_lexemes(config))
            terms += self._ignore_terms
            hits = [overlapping_keys(term, seen, check) for term in terms]
            if any(hits):
                tagged = (
                    rx.tag(term.id, rx.difference(term, _spellings_of(hit)) if hit else term)
                    for term, hit in zip(terms, hits)
                )
                sid = self.lexer.sid(rx.alt(*tagged), check)
            else:
                sid = start
            if len(_EXCLUDING_STARTS) >= MAX_EXCLUDING_STARTS:
                _EXCLUDING_STARTS.clear()
            _EXCLUDING_STARTS[key] = sid
        return sid

    def begin_lexeme_excluding(
        self, state: State, byte: int, seen: frozenset[str], check: Check = no_check
    ) -> State | None:
        """The state from which `byte` starts a new lexeme that spells none of the keys `seen`
        (`state` itself when `byte` continues the current lexeme), or None when the current lexeme
        cannot end here or every lexeme that may start is excluded."""
        config, sid = state
        if sid is not None:
            if self.lexer.step(sid, byte, check) != DEAD:
                return state
            if not self.lexer.accepting[sid]:
                return None
            ended = self.end_lexeme(config, sid)
            if ended is None:
                return None
            config = ended
        start = self.lexer_start_excluding(config, seen, check)
        return None if start == DEAD else (config, start)

    def config_after_terminal(self, config: int, tag: int) -> int | None:
        """The configuration after a lexeme of the terminal tagged `tag` (an ignored one leaves
        `config` as is), or None if the parser cannot take it."""
        if tag in self._ignore_tags:
            return config
        lexeme = self._lexeme_of_tag.get(tag)
        return None if lexeme is None else self.parser.advance(config, lexeme)

    def end_lexeme(self, config: int, sid: int) -> int | None:
        """The configuration after the lexeme that ends in lexer state `sid`, or None if it cannot end
        there. Several terminals accepting the same text are all taken (the parser disambiguates)."""
        key = (config, sid)
        result = self._end_cache.get(key, _UNKNOWN)
        if result is not _UNKNOWN:
            return result  # type: ignore[return-value]
        ignored, lexemes = self.endings_of(sid)
        results = [config] if ignored else []
        for lexeme in lexemes:
            advanced = self.parser.advance(config, lexeme)
            if advanced is not None:
                results.append(advanced)
        if len(results) > 1:
            result = self.parser.join(sorted(set(results)))
        else:
            result = results[0] if results else None
        self._end_cache[key] = result
        return result

    def endings_of(self, sid: int) -> tuple[bool, tuple[int, ...]]:
        """Whether an ignored terminal may end in lexer state `sid`, and the parser's lexemes that may
        (indices into `parser.lexeme_terms`): what `end_lexeme` takes there."""
        endings = self._endings.get(sid)
        if endings is None:
            tags = self.lexer.accepting_tags(sid)
            lexemes = tuple(self._lexeme_of_tag[tag] for tag in tags if tag in self._lexeme_of_tag)
            endings = self._endings[sid] = (any(tag in self._ignore_tags for tag in tags), lexemes)
        return endings

    def walk(self, state: State, data: bytes, check: Check = no_check) -> State | None:
        """The state after reading `data` from `state`, or None if `data` leaves the language.

        Raises:
            ConstraintLimitError: from `check`, called before each new lexer row (one can take seconds).
        """
        key = (state, data)
        cached = self._walk_cache.get(key, False)
        if cached is not False:
            return cached  # type: ignore[return-value]
        result = self._walk(state, data, check)
        if len(self._walk_cache) >= MAX_MEMO_ENTRIES:
            self._walk_cache.clear()
        self._walk_cache[key] = result
        return result

    def _walk(self, state: State, data: bytes, check: Check) -> State | None:
        config, sid = state
        lexer = self.lexer

        def step(sid: int, byte: int) -> int:
            row = lexer.rows[sid]
            return row[byte] if row is not None else lexer.step(sid, byte, check)

        for byte in data:
            if sid is None:
                nxt = step(self.lexer_start(config), byte)
            else:
                nxt = step(sid, byte)
                if nxt == DEAD:
                    ended = self.end_lexeme(config, sid)
                    if ended is None:
                        return None
                    config = ended
                    nxt = step(self.lexer_start(config), byte)
            if nxt == DEAD:
                return None
            sid = nxt
        return self._settle(config, sid)

    def forced_bytes(self, state: State, keys: Keys | None = None, check: Check = no_check) -> bytes:
        """The bytes every sentence that continues the text at `state` must continue with (`keys`:
        the text's JSON keys, where the grammar tracks them, so a forced key is a fresh one), up to
        MAX_FORCED_BYTES: empty where the text may end or the next byte is open. What jump-forward
        appends without sampling; memoized per (state, keys), the states along the run included.
        A token budget (length-aware masks) only removes continuations, so what is forced here is
        forced under any budget too.

        Byte by byte: a byte is forced when it is the only one `walk` (`walk_keyed`) takes from
        here. Where the grammar has dead ends (a byte `walk` takes that no sentence continues), the
        run may stop early, never run long.

        Raises:
            ConstraintLimitError: from `check` (see `walk`).
        """
        at = (state, keys)
        found = self._forced_cache.get(at)
        if found is not None:
            return found
        forced = bytearray()
        path: list[tuple[State, Keys | None]] = []
        while len(forced) < MAX_FORCED_BYTES and not self.can_end(at[0]):
            step = self._only_next_byte(at[0], at[1], check)
            if step is None:
                break
            path.append(at)
            forced.append(step[0])
            at = step[1]
            known = self._forced_cache.get(at)
            if known is not None:  # the rest of the run is known
                forced += known[: MAX_FORCED_BYTES - len(forced)]
                break
        if len(self._forced_cache) + len(path) >= MAX_FORCED_ENTRIES:
            self._forced_cache.clear()
        for index, visited in enumerate(path):
            self._forced_cache[visited] = bytes(forced[index:])
        if not path:
            self._forced_cache[at] = b""
        return bytes(forced)

    def _only_next_byte(
        self, state: State, keys: Keys | None, check: Check
    ) -> tuple[int, tuple[State, Keys | None]] | None:
        """The one byte `walk` takes from `state` and where it leads, or None when none or several do."""
        only = None
        for byte in self._next_byte_candidates(state, check):
            stepped: tuple[State, Keys | None] | None
            if keys is None:
                walked = self.walk(state, _SINGLE_BYTES[byte], check)
                stepped = None if walked is None else (walked, None)
            else:
                stepped = walk_keyed(self, state, keys, _SINGLE_BYTES[byte], check)
            if stepped is not None:
                if only is not None:
                    return None
                only = (byte, stepped)
        return only

    def _next_byte_candidates(self, state: State, check: Check) -> list[int]:
        """The bytes the lexer takes from `state`, continuing the lexeme or starting the next one: a
        superset of those `walk` takes (it also ends lexemes eagerly, and keys restrict starts)."""
        config, sid = state
        lexer = self.lexer
        if sid is None:
            return np.flatnonzero(lexer.live_bytes(self.lexer_start(config, check), check)).tolist()
        alive = lexer.live_bytes(sid, check)
        ended = self.end_lexeme(config, sid) if lexer.accepting[sid] else None
        if ended is not None:
            alive |= lexer.live_bytes(self.lexer_start(ended, check), check)
        return np.flatnonzero(alive).tolist()

    def _settle(self, config: int, sid: int | None) -> State | None:
        """End a lexeme eagerly when nothing can extend it, so boundaries are states of their own."""
        if sid is not None and self.lexer.accepting[sid] and not self.lexer.can_continue(sid):
            ended = self.end_lexeme(config, sid)
            return None if ended is None else (ended, None)
        return (config, sid)

    def can_end(self, state: State) -> bool:
        """Whether the text read so far is a complete sentence."""
        config, sid = state
        if sid is None:
            return self.parser.is_accepting(config)
        if not self.lexer.accepting[sid]:
            return False
        ended = self.end_lexeme(config, sid)
        return ended is not None and self.parser.is_accepting(ended)

    def accepts(self, data: bytes, check: Check = no_check) -> bool:
        """Whether `data` is a whole sentence.

        Raises:
            ConstraintLimitError: from `check` (see `walk`).
        """
        if self.initial_keys is not None:
            walked = walk_keyed(self, self.initial, self.initial_keys, data, check)
            return walked is not None and self.can_end(walked[0])
        state = self.walk(self.initial, data, check)
        return state is not None and self.can_end(state)


def _spellings_of(names: frozenset[str]) -> rx.Term:
    """Every spelling of each of `names` (spellable ones: `overlapping_keys` returns no others)."""
    return rx.alt(*(spellings for spellings in map(key_spellings, sorted(names)) if spellings is not None))
