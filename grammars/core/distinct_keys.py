"""Distinct keys: the JSON objects a JSON-Schema grammar writes never repeat a key.

No context-free rule can say it (the keys seen so far are unbounded state), so it is tracked beside
the automaton, per sequence: `Keys` scans the JSON text (nesting, strings, which string is a key)
and holds the decoded keys of each open object; keys compare decoded, so `"a"` and `"\\u0061"` are
one key. Where a key begins in an object that already has keys, the lexeme starts in a restricted
lexer state (`GrammarAutomaton.lexer_start_excluding`: every allowed lexeme minus each spelling of
the seen keys). The lexer itself then refuses a duplicate, a key prefix that only seen keys extend
is a dead lexer state (so the vocabulary walk of a mask drops the tokens that lead there), and a
comma after which no fresh key exists is refused. Once a prefix leaves every seen key, the
restriction simplifies away and the lexer states are the plain ones again.

Where the JSON begins (`ir.Grammar.distinct_keys_after`): a grammar that embeds JSON after other
text (reasoning then an answer, tool calls beside free text) gives a byte term; `Keys.gate` walks
it as a lexer state, and scanning starts after the shortest prefix of the output it matches, so
free text before the JSON (or instead of it) is never read as JSON.

Not covered: an object whose remaining keys can only come from a finite set *and* whose counts
(`minProperties`) or value conditions need more keys than that set still holds; such schemas are
nearly contradictory, and the mask may then reach a state with no continuation.
"""

from __future__ import annotations

import bisect
import functools
import json
import logging
import re
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING, NamedTuple

from grammars.core import byte_regex as rx
from grammars.core.budget import Check, no_check
from grammars.core.lexer import DEAD

if TYPE_CHECKING:
    from grammars.core.automaton import GrammarAutomaton, State
    from grammars.core.lexer import LexerTables

logger = logging.getLogger(__name__)


def _load_compiled() -> ModuleType | None:
    try:
        from grammars.core import _distinct_keys
    except ImportError as exc:
        logger.warning(
            "the compiled key classifier (grammars.core._distinct_keys) is not built (%s): keyed masks check "
            "every candidate token in Python, slower; scripts/install.sh builds it",
            exc,
        )
        return None
    return _distinct_keys


#: The compiled classifier of `refusals`' tokens, or None when it is not built (then `scan` reads each).
compiled_keys = _load_compiled()

_QUOTE, _BACKSLASH = ord('"'), ord("\\")
_OPEN_OBJECT, _OPEN_ARRAY, _COMMA = ord("{"), ord("["), ord(",")
_CLOSERS = frozenset(b"}]")
_WHITESPACE = (b" ", b"\n", b"\t", b"\r")

# Scanner modes.
_VALUE = 0  # outside strings, not expecting a key
_KEY_NEXT = 1  # in an object, after `{` or `,`: a key (or `}`) comes next
_KEY = 2  # inside a key string
_STRING = 3  # inside a string value


class Keys(NamedTuple):
    """Where the JSON text stands, for key tracking (immutable: forks share it).

    frames: per open container, the decoded keys of an object so far, or None for an array.
    mode: one of the scanner modes above.
    key: the raw bytes of the key being written (mode _KEY).
    is_escaped: the previous string byte was a backslash.
    gate: the lexer state of what is left of `distinct_keys_after` before the JSON begins, or
        None once it has (DEAD: the JSON never begins in this output).
    """

    frames: tuple[frozenset[str] | None, ...]
    mode: int
    key: bytes
    is_escaped: bool
    gate: int | None

    @property
    def awaits_quote(self) -> bool:
        """Inside a string, or where a key must begin: only a quote changes the structure."""
        return self.mode != _VALUE

    @property
    def object_keys(self) -> frozenset[str]:
        """The keys of the innermost open container so far (none for an array, or outside JSON)."""
        return (self.frames[-1] or frozenset()) if self.frames else frozenset()

    @property
    def awaits_fresh_key(self) -> bool:
        """Where a key must begin in an object that already has keys (one that must differ from them)."""
        return self.mode == _KEY_NEXT and bool(self.object_keys)

    @property
    def has_seen_keys(self) -> bool:
        """Whether some open object already has a key (only then can a token repeat one)."""
        return any(self.frames)


def initial_keys(lexer: LexerTables, distinct_keys_after: rx.Term, check: Check = no_check) -> Keys:
    """The keys at the start of an output whose JSON begins after `distinct_keys_after`.

    Raises:
        ConstraintLimitError: from `check`.
    """
    gate = None if distinct_keys_after.nullable else lexer.sid(distinct_keys_after, check)
    return Keys((), _VALUE, b"", False, gate)


#: Bytes a key's raw text needs the JSON decoder for: escapes and control bytes (which it refuses).
_ESCAPE_OR_CONTROL = re.compile(rb"[\x00-\x1f\\]")


def _decoded(raw: bytes) -> str:
    """The key a JSON string's raw inside spells (a NUL and the bytes' hex where it is not one).
    Without escapes or controls that is its UTF-8, as `json.loads` decodes it (surrogates passed),
    at a tenth of the cost: keys are decoded for every candidate token that closes one."""
    try:
        if _ESCAPE_OR_CONTROL.search(raw) is None:
            return raw.decode("utf-8", "surrogatepass")
        return str(json.loads(b'"' + raw + b'"'))
    except ValueError:  # not a JSON string: the grammar refuses the text anyway
        return "\x00" + raw.hex()


def scan(
    keys: Keys, data: bytes, lexer: LexerTables, check: Check = no_check
) -> tuple[Keys, list[tuple[int, frozenset[str]]]] | None:
    """`keys` after the bytes `data`, and the positions in `data` where a key begins in an object
    that already has keys (with those keys); None when a key repeats one of its object.

    Raises:
        ConstraintLimitError: from `check` (a new lexer row of the gate).
    """
    frames, mode, key, is_escaped, gate = keys
    json_from = 0  # where the JSON begins in `data`
    if gate is not None:
        if gate == DEAD:
            return keys, []
        for byte in data:
            json_from += 1
            gate = lexer.step(gate, byte, check)
            if lexer.accepting[gate]:
                gate = None
                break
        if gate is not None:
            return keys._replace(gate=gate), []
    starts: list[tuple[int, frozenset[str]]] = []
    key_from = json_from  # where the current key's bytes begin in `data`
    for position, byte in enumerate(data[json_from:], json_from):
        if mode == _KEY or mode == _STRING:
            if is_escaped:
                is_escaped = False
            elif byte == _BACKSLASH:
                is_escaped = True
            elif byte == _QUOTE:
                if mode == _KEY:
                    name = _decoded(key + data[key_from:position])
                    seen = frames[-1] or frozenset()
                    if name in seen:
                        return None
                    frames = frames[:-1] + (seen | {name},)
                    key = b""
                mode = _VALUE
        elif byte == _QUOTE:
            if mode == _KEY_NEXT:
                if frames[-1]:
                    starts.append((position, frames[-1]))
                mode, key_from = _KEY, position + 1
            else:
                mode = _STRING
        elif byte == _OPEN_OBJECT:
            frames += (frozenset(),)
            mode = _KEY_NEXT
        elif byte == _OPEN_ARRAY:
            frames += (None,)
            mode = _VALUE
        elif byte in _CLOSERS:
            frames = frames[:-1]
            mode = _VALUE
        elif byte == _COMMA and frames and frames[-1] is not None:
            mode = _KEY_NEXT
    if mode == _KEY:
        key += data[key_from:]
    return Keys(frames, mode, key, is_escaped, None), starts


def may_need_check(data: bytes, mode: int, is_escaped: bool, keys_may_run_out: bool) -> bool:
    """Whether `refusals` may have to check `data` after text that leaves `scan` in `mode`
    (`is_escaped`), whatever the open objects hold: it closes a key, opens or closes a container
    (a few more checks than needed, for brackets), or (where keys may run out,
    `GrammarAutomaton.keys_may_run_out`) begins a key or may end where a fresh key must come.
    Where it is False, `refusals` passes `data` by. Examples: after `"a": ` the token `",` opens a
    string value that holds its comma; where keys never run out, inside a value the token `",`
    ends it and awaits the next key, which always exists. It depends on the token's bytes and the
    mode alone, so it is decided once per token.

    Where keys never run out, the key being written (`mode` _KEY) is not checked either: it began
    in a lexer state restricted to fresh keys (`walk_keyed`), so the plain mask refuses a repeat.

    It mirrors `scan`'s transitions over unknown containers: a comma always leads to where a key
    must come (in an array it would not), so it may over-approximate `scan`, never miss what it
    finds (tested against `scan` from object, array and nested contexts).
    """
    is_current = mode == _KEY  # the first quote closes the key being written
    for byte in data:
        if mode == _KEY or mode == _STRING:
            if is_escaped:
                is_escaped = False
            elif byte == _BACKSLASH:
                is_escaped = True
            elif byte == _QUOTE:
                if mode == _KEY and (keys_may_run_out or not is_current):
                    return True  # a key closes: it may repeat one
                mode, is_current = _VALUE, False
        elif byte == _QUOTE:
            if mode == _KEY_NEXT and keys_may_run_out:
                return True  # a key begins: it may begin only seen keys
            mode = _KEY if mode == _KEY_NEXT else _STRING
        elif byte == _OPEN_OBJECT or byte == _OPEN_ARRAY or byte in _CLOSERS:
            if keys_may_run_out:
                return True
            mode = _KEY_NEXT if byte == _OPEN_OBJECT else _VALUE  # as `scan` moves
        elif byte == _COMMA:
            mode = _KEY_NEXT
    return keys_may_run_out and mode == _KEY_NEXT


@functools.lru_cache(maxsize=4096)
def key_spellings(name: str) -> rx.Term | None:
    """Every spelling of the key `name` as a whole JSON string (quotes included); None for a name
    no JSON text spells (a lone surrogate)."""
    from grammars.frontends.json_schema.strings import string_lexeme, value_encodings

    if any(0xD800 <= ord(c) <= 0xDFFF for c in name):
        return None  # no JSON text spells a lone surrogate (`value_encodings` refuses it)
    return string_lexeme(value_encodings(name))


#: Entries kept in each memo below before it starts afresh.
MAX_MEMO_ENTRIES = 65_536
#: Per lexeme term id: the keys a literal spells (one at most), or None for a term that is no literal.
#: Term ids are never reused, so the memos are process-wide.
_LITERAL_KEYS: dict[int, frozenset[str] | None] = {}
#: (lexeme term id, key) -> whether the lexeme holds a spelling of the key (`rx.shares_string`).
_SHARES_KEY: dict[tuple[int, str], bool] = {}


def overlapping_keys(lexeme: rx.Term, seen: frozenset[str], check: Check = no_check) -> frozenset[str]:
    """The keys of `seen` that `lexeme` (one allowed where a key begins) holds some spelling of: what
    restricting it to fresh keys takes out of it.

    Decided without a search for the lexemes keys mostly meet: a declared key is a literal, which
    spells at most the one key it decodes to (checked against that key's spellings); "every key but
    the declared ones" holds every key but those (`strings.names_left_out`). Other lexemes are
    searched per key (`rx.shares_string`), memoized.

    Raises:
        ConstraintLimitError: from `check`.
    """
    from grammars.frontends.json_schema.strings import names_left_out

    spelled = _literal_keys(lexeme)
    if spelled is not None:
        return spelled & seen
    left_out = names_left_out(lexeme)
    if left_out is not None:
        return frozenset(name for name in seen - left_out if key_spellings(name) is not None)
    return frozenset(name for name in seen if _shares_key(lexeme, name, check))


def _literal_keys(lexeme: rx.Term) -> frozenset[str] | None:
    """The key `lexeme` spells (none or one) when it is a literal, else None (memoized)."""
    if lexeme.id in _LITERAL_KEYS:
        return _LITERAL_KEYS[lexeme.id]
    data = _literal_bytes(lexeme)
    found: frozenset[str] | None = None
    if data is not None:
        name = _json_string(data)
        spellings = None if name is None else key_spellings(name)
        found = (
            frozenset((name,))
            if name is not None and spellings is not None and _matches(spellings, data)
            else frozenset()
        )
    if len(_LITERAL_KEYS) >= MAX_MEMO_ENTRIES:
        _LITERAL_KEYS.clear()
    _LITERAL_KEYS[lexeme.id] = found
    return found


def _literal_bytes(term: rx.Term) -> bytes | None:
    """The one string of `term` when it is a literal (`rx.literal`: a chain of single bytes), else None."""
    data = bytearray()
    while True:
        head = term.args[0] if term.kind == rx.K_CONCAT else term
        if head.kind != rx.K_BYTES or head.bits & (head.bits - 1):
            return None
        data.append(head.bits.bit_length() - 1)
        if term.kind != rx.K_CONCAT:
            return bytes(data)
        term = term.args[1]


def _json_string(data: bytes) -> str | None:
    """The string the JSON string literal `data` decodes to, or None when it is not one."""
    if len(data) < 2 or data[:1] != b'"' or data[-1:] != b'"':
        return None
    try:
        decoded = json.loads(data)
    except ValueError:
        return None
    return decoded if isinstance(decoded, str) else None


def _matches(term: rx.Term, data: bytes) -> bool:
    for byte in data:
        term = rx.derivative(term, byte)
        if term is rx.EMPTY:
            return False
    return term.nullable


def _shares_key(lexeme: rx.Term, name: str, check: Check) -> bool:
    key = (lexeme.id, name)
    found = _SHARES_KEY.get(key)
    if found is None:
        spellings = key_spellings(name)
        found = spellings is not None and _shares_string(lexeme, spellings, check)
        if len(_SHARES_KEY) >= MAX_MEMO_ENTRIES:
            _SHARES_KEY.clear()
        _SHARES_KEY[key] = found
    return found


def _shares_string(lexeme: rx.Term, spellings: rx.Term, check: Check) -> bool:
    """`rx.shares_string`, by the compiled emptiness search of the intersection where the compiled
    derivatives are built: the Python search derives the (large) lexeme byte by byte, term by term,
    the first time it meets it, the compiled one in C++. Where that search is undecided (past its
    state bound), or not built, the Python search answers."""
    if rx.compiled_derivatives is not None:
        empty = rx.is_empty(rx.intersect(lexeme, spellings), check)
        if empty is not None:
            return not empty
    return rx.shares_string(lexeme, spellings, check)


def walk_keyed(
    automaton: GrammarAutomaton, state: State, keys: Keys, data: bytes, check: Check = no_check
) -> tuple[State, Keys] | None:
    """`automaton.walk` that also tracks keys: None where `data` repeats a key of an object or
    leaves no fresh key to write where one must come next.

    Raises:
        ConstraintLimitError: from `check`.
    """
    scanned = scan(keys, data, automaton.lexer, check)
    return None if scanned is None else _walk_scanned(automaton, state, data, *scanned, check)


def refuses(automaton: GrammarAutomaton, state: State, keys: Keys, data: bytes, check: Check = no_check) -> bool:
    """Whether tracking keys refuses `data` after `state`, where `automaton.walk` takes it (what a
    mask asks of each token its plain mask allows). Only a token that repeats a key, begins one in
    an object with keys or ends where such a key must come can be refused: the others are not
    walked again. Token by token: the reference `refusals` (what masks call) must agree with.

    Raises:
        ConstraintLimitError: from `check`.
    """
    scanned = scan(keys, data, automaton.lexer, check)
    if scanned is None:
        return True
    after, starts = scanned
    if not starts and not after.awaits_fresh_key:
        return False
    return _walk_scanned(automaton, state, data, after, starts, check) is None


def refusals(
    automaton: GrammarAutomaton, state: State, keys: Keys, tokens: Sequence[bytes], check: Check = no_check
) -> list[int]:
    """The indices of the `tokens` that `refuses` refuses after `state` (the few candidates of a mask,
    each taken by `automaton.walk`): its answers, for a fraction of the walks.

    A key that a token begins from a lexeme start the plain walk took unrestricted changes nothing
    unless the token's bytes from that quote on may still begin a spelling of a seen key: the
    derivative of (lexeme less spellings) by bytes that begin no spelling is the lexeme's own. So
    only tokens that end inside such a prefix are walked restricted, as `refuses` walks them; and
    where a fresh key must come after a token, the verdict is shared by the tokens that end in the
    same state with the same keys.

    Where no object of the grammar can run out of fresh keys (`GrammarAutomaton.keys_may_run_out`),
    only a key that a token closes can be refused, and `scan` finds that alone: the plain walk took
    the token, so each key it begins has a completion the grammar allows next, either a named key
    (written once each, in order, and never as another key) or one of an infinite set of keys, which
    a finite set of seen keys cannot exhaust; and for the same reason a fresh key can begin after
    each comma.

    Where the compiled classifier is built, one pass over all the tokens settles most of them
    (`_distinct_keys.classify`: nothing to refuse, or a repeated key) and says which end where a fresh
    key must come with the objects as they were; `scan` reads only the rest.

    Raises:
        ConstraintLimitError: from `check`.
    """
    verdicts = _verdicts(keys, tokens, automaton.keys_may_run_out)
    if not automaton.keys_may_run_out:
        return [
            index
            for index, data in enumerate(tokens)
            if verdicts[index] == _REFUSE
            or (verdicts[index] == _ASK and scan(keys, data, automaton.lexer, check) is None)
        ]
    refused: list[int] = []
    at_key: dict[tuple[State, frozenset[str]], bool] = {}
    encoded: dict[frozenset[str], list[bytes]] = {}
    awaiting = keys._replace(mode=_KEY_NEXT, is_escaped=False)  # `after` of an _AWAIT verdict
    for index, data in enumerate(tokens):
        verdict = verdicts[index]
        if verdict == _PASS:
            continue
        if verdict == _REFUSE:
            refused.append(index)
            continue
        if verdict == _AWAIT:
            after = awaiting
        else:
            scanned = scan(keys, data, automaton.lexer, check)
            if scanned is None:
                refused.append(index)
                continue
            after, starts = scanned
            if starts and any(_may_spell_seen(data[position + 1 :], seen, encoded) for position, seen in starts):
                if _walk_scanned(automaton, state, data, after, starts, check) is None:
                    refused.append(index)
                continue
            if not after.awaits_fresh_key:
                continue
        walked = automaton.walk(state, data, check)
        if walked is None:
            refused.append(index)
            continue
        key = (walked, after.object_keys)
        stranded = at_key.get(key)
        if stranded is None:
            stranded = at_key[key] = _at_key(automaton, walked, after, check) is None
        if stranded:
            refused.append(index)
    return refused


# `_distinct_keys.classify`'s verdict per token (see _distinct_keys.cpp): nothing to refuse; a key it closes
# repeats one; it ends where a fresh key must come, the objects unchanged; `scan` must read it.
_PASS, _REFUSE, _AWAIT, _ASK = 0, 1, 2, 3


def _verdicts(keys: Keys, tokens: Sequence[bytes], keys_may_run_out: bool) -> bytes | list[int]:
    """What `refusals` must do with each token: classified in one compiled pass, or all _ASK where the
    classifier is not built, the JSON has not begun (a gate) or a key's text is carried in another mode."""
    if compiled_keys is None or keys.gate is not None or (keys.key and keys.mode != _KEY):
        return [_ASK] * len(tokens)
    return compiled_keys.classify(keys.frames, keys.mode, keys.key, keys.is_escaped, list(tokens), keys_may_run_out)


def _may_spell_seen(key_bytes: bytes, seen: frozenset[str], encoded: dict[frozenset[str], list[bytes]]) -> bool:
    """Whether a key whose first bytes (after its quote) are `key_bytes` may still be a spelling of one
    of `seen` (conservatively: any escape may be). A key that ends in them cannot: `scan` has checked it.
    `encoded`: the sorted UTF-8 of each set of keys met so far (a binary search finds a prefix)."""
    if _BACKSLASH in key_bytes:
        return True
    if _QUOTE in key_bytes:
        return False
    names = encoded.get(seen)
    if names is None:
        names = encoded[seen] = sorted(name.encode("utf-8", "surrogatepass") for name in seen)
    at = bisect.bisect_left(names, key_bytes)
    return at < len(names) and names[at].startswith(key_bytes)


def _walk_scanned(
    automaton: GrammarAutomaton,
    state: State,
    data: bytes,
    after: Keys,
    starts: list[tuple[int, frozenset[str]]],
    check: Check,
) -> tuple[State, Keys] | None:
    """`walk_keyed` once `data` is scanned: each key that `starts` begins in the restricted state."""
    done = 0
    for position, seen in starts:
        before = automaton.walk(state, data[done:position], check)
        begun = None if before is None else automaton.begin_lexeme_excluding(before, _QUOTE, seen, check)
        if begun is None:
            return None
        state, done = begun, position
    walked = automaton.walk(state, data[done:], check)
    return None if walked is None else _at_key(automaton, walked, after, check)


def _at_key(automaton: GrammarAutomaton, state: State, keys: Keys, check: Check) -> tuple[State, Keys] | None:
    """Where a key must come next in an object with keys: at a lexeme boundary, the restricted start
    state (so masks see the restriction); None when no fresh key can start."""
    if not keys.awaits_fresh_key:
        return state, keys
    sid = state[1]
    if sid is not None and not automaton.lexer.accepting[sid]:
        # Inside a separator (`, ` or `,` then an indent): the key is checked as it begins, but a
        # fresh key must be able to begin once the separator ends, or the comma strands the text.
        return (state, keys) if _fresh_key_after_separator(automaton, state, keys.object_keys, check) else None
    begun = automaton.begin_lexeme_excluding(state, _QUOTE, keys.object_keys, check)
    if begun is None:
        return None
    return (begun if state[1] is None else state), keys


def _fresh_key_after_separator(automaton: GrammarAutomaton, state: State, seen: frozenset[str], check: Check) -> bool:
    """Whether whitespace can finish the separator `state` is inside and a key other than `seen` begin
    after it: a search over the (few, bounded-whitespace) states whitespace bytes lead to. A lexeme
    that goes on with the quote itself (a literal `, "name"`) holds the key: it is checked as it begins."""
    frontier, visited = [state], {state}
    while frontier:
        current = frontier.pop()
        sid = current[1]
        if sid is None or automaton.lexer.accepting[sid]:
            if automaton.begin_lexeme_excluding(current, _QUOTE, seen, check) is not None:
                return True
        elif automaton.lexer.step(sid, _QUOTE, check) != DEAD:
            return True
        for byte in _WHITESPACE:
            following = automaton.walk(current, byte, check)
            if following is not None and following not in visited:
                visited.add(following)
                frontier.append(following)
    return False
