"""A grammar as a byte-level automaton: parser configuration plus lexer state.

A state is `(config, sid)`: the parser configuration after the lexemes completed so far, and the
lexer state inside the current lexeme, or `None` at a lexeme boundary. Lexing is greedy: a lexeme
ends where the next byte cannot extend it (one byte of lookahead, no backtracking), which is exact
for grammars whose terminals do not need backtracking (every JSON grammar we generate) and is the
semantics `accepts()` and the token masks share.
"""

from __future__ import annotations

from grammars.core import ir
from grammars.core.lexer import DEAD, LEXER, start_state
from grammars.core.normalize import normalize
from grammars.core.parser import Parser

State = tuple[int, int | None]

#: Entries kept in each memo before it is cleared (bounds memory on endless generations).
MAX_MEMO_ENTRIES = 500_000


class GrammarAutomaton:
    """Byte-level recognizer of a grammar's language, memoized for reuse across matchers.

    Args:
        grammar: any IR grammar; it is normalized here.
    Raises:
        EmptyLanguageError, GrammarError, ConstraintLimitError: see `grammars.core.normalize` and `grammars.core.parser`.
    """

    def __init__(self, grammar: ir.Grammar) -> None:
        normalized = normalize(grammar)
        self.parser = Parser(normalized)
        self._lexeme_of_tag = {term.id: index for index, term in enumerate(self.parser.lexeme_terms)}
        self._ignore_terms = normalized.ignore
        self._ignore_tags = frozenset(term.id for term in normalized.ignore)
        self._start_sid: dict[int, int] = {}
        self._end_cache: dict[tuple[int, int], int | None] = {}
        self._walk_cache: dict[tuple[State, bytes], State | None] = {}
        self.initial: State = (self.parser.initial, None)

    def lexer_start(self, config: int) -> int:
        """The lexer state at a lexeme boundary: any lexeme the parser allows, or an ignored one."""
        sid = self._start_sid.get(config)
        if sid is None:
            terms = tuple(self.parser.lexeme_terms[i] for i in self.parser.allowed_lexemes(config))
            sid = start_state(terms + self._ignore_terms)
            self._start_sid[config] = sid
        return sid

    def end_lexeme(self, config: int, sid: int) -> int | None:
        """The configuration after the lexeme that ends in lexer state `sid`, or None if it cannot end
        there. Several terminals accepting the same text are all taken (the parser disambiguates)."""
        key = (config, sid)
        if key in self._end_cache:
            return self._end_cache[key]
        results = []
        for tag in LEXER.accepting_tags(sid):
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

    def walk(self, state: State, data: bytes) -> State | None:
        """The state after reading `data` from `state`, or None if `data` leaves the language."""
        key = (state, data)
        cached = self._walk_cache.get(key, False)
        if cached is not False:
            return cached  # type: ignore[return-value]
        result = self._walk(state, data)
        if len(self._walk_cache) >= MAX_MEMO_ENTRIES:
            self._walk_cache.clear()
        self._walk_cache[key] = result
        return result

    def _walk(self, state: State, data: bytes) -> State | None:
        config, sid = state
        step = LEXER.step
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
        if sid is not None and LEXER.accepting[sid] and not LEXER.can_continue(sid):
            ended = self.end_lexeme(config, sid)
            return None if ended is None else (ended, None)
        return (config, sid)

    def can_end(self, state: State) -> bool:
        """Whether the text read so far is a complete sentence."""
        config, sid = state
        if sid is None:
            return self.parser.accepting[config]
        if not LEXER.accepting[sid]:
            return False
        ended = self.end_lexeme(config, sid)
        return ended is not None and self.parser.accepting[ended]

    def accepts(self, data: bytes) -> bool:
        state = self.walk(self.initial, data)
        return state is not None and self.can_end(state)
