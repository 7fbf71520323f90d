"""A grammar as a byte-level automaton: parser configuration plus lexer state.

A state is `(config, sid)`: the parser configuration after the lexemes completed so far, and the
lexer state inside the current lexeme, or `None` at a lexeme boundary. Lexing is greedy: a lexeme
ends where the next byte cannot extend it (one byte of lookahead, no backtracking), which is exact
for grammars whose terminals do not need backtracking (every JSON grammar we generate) and is the
semantics `accepts()` and the token masks share. Lexer state ids belong to the automaton's own
`lexer` generation (`grammars.core.lexer.current_lexer`): read them through `automaton.lexer`.
"""

from __future__ import annotations

from grammars.core import ir
from grammars.core.budget import Budget, Check, no_check
from grammars.core.lexer import DEAD, current_lexer
from grammars.core.normalize import normalize
from grammars.core.parser import MAX_FRAMES, Parser

State = tuple[int, int | None]

#: Entries kept in each memo before it is cleared (bounds memory on endless generations).
MAX_MEMO_ENTRIES = 500_000


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
        self._start_sid: dict[int, int] = {}
        self._end_cache: dict[tuple[int, int], int | None] = {}
        self._walk_cache: dict[tuple[State, bytes], State | None] = {}
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
            terms = tuple(self.parser.lexeme_terms[i] for i in self.parser.allowed_lexemes(config))
            sid = self.lexer.start_state(terms + self._ignore_terms, check)
            self._start_sid[config] = sid
        return sid

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
        if key in self._end_cache:
            return self._end_cache[key]
        results = []
        for tag in self.lexer.accepting_tags(sid):
            if tag in self._ignore_tags:
                results.append(config)
            lexeme = self._lexeme_of_tag.get(tag)
            if lexeme is not None:
                advanced = self.parser.advance(config, lexeme)
                if advanced is not None:
                    results.append(advanced)
        result = self.parser.join(sorted(set(results))) if results else None
        self._end_cache[key] = result
        return result

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
            return (row if row is not None else lexer.row(sid, check))[byte]

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
            return self.parser.accepting[config]
        if not self.lexer.accepting[sid]:
            return False
        ended = self.end_lexeme(config, sid)
        return ended is not None and self.parser.accepting[ended]

    def accepts(self, data: bytes, check: Check = no_check) -> bool:
        """Whether `data` is a whole sentence.

        Raises:
            ConstraintLimitError: from `check` (see `walk`).
        """
        state = self.walk(self.initial, data, check)
        return state is not None and self.can_end(state)
