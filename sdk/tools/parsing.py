"""Reading a completion in the tool-call format: content, or calls (name, arguments' JSON text).

`ToolCallParser` reads the completion as it streams and says what each delta added:

    ContentDelta(text)             text of a completion that is not calls (never empty)
    CallStart(index, name)         once per call, when its name is complete
    ArgumentsDelta(index, text)    the next fragment of that call's arguments JSON (never empty)
    CallEnd(index, arguments)      the call's whole arguments JSON, once it closed

It is driven by the format's fixed structure (`sdk.tools.format`), which the constraint guarantees:
the first bytes tell content from calls (text is held back only while it could still be `MARKER`),
then fixed text is matched, the name read up to its closing quote, and the arguments followed by
depth and string state (`sdk.streaming.PartialJSON`) until their object closes. Each byte is looked
at once. A completion that breaks the format (only possible from a backend that did not enforce the
constraint) raises `ToolCallFormatError` with the offset. `parse_tool_output` reads a whole text.
"""

from __future__ import annotations

import enum
from collections.abc import Collection
from dataclasses import dataclass

from sdk.streaming import PartialJSON
from sdk.tools.errors import ToolCallFormatError
from sdk.tools.format import ARGUMENTS_OPEN, CALL_CLOSE, CALL_OPEN, CALL_SEPARATOR, MARKER, NAME_OPEN

__all__ = [
    "ArgumentsDelta",
    "CallEnd",
    "CallStart",
    "ContentDelta",
    "ParsedCall",
    "ParsedOutput",
    "ToolCallParser",
    "ToolEvent",
    "parse_tool_output",
]


@dataclass(frozen=True)
class ContentDelta:
    text: str


@dataclass(frozen=True)
class CallStart:
    index: int
    name: str


@dataclass(frozen=True)
class ArgumentsDelta:
    index: int
    text: str


@dataclass(frozen=True)
class CallEnd:
    index: int
    arguments: str


ToolEvent = ContentDelta | CallStart | ArgumentsDelta | CallEnd


@dataclass(frozen=True)
class ParsedCall:
    """One call as written: the tool's name and its arguments' JSON text."""

    name: str
    arguments: str


@dataclass(frozen=True)
class ParsedOutput:
    """A whole completion: `content` (None when it holds calls) or `calls` (empty when it is content)."""

    content: str | None
    calls: tuple[ParsedCall, ...]


class _State(enum.Enum):
    UNDECIDED = "undecided"  # could still be MARKER
    CONTENT = "content"
    FIXED = "fixed"  # matching `_expected`
    NAME = "name"
    ARGUMENTS = "arguments"
    BETWEEN = "between"  # after a call: the end, or the next one


class ToolCallParser:
    """Incremental reader of a completion in the tool-call format.

    Args:
        tool_names: the names a call may have (None: any); another name raises.
    """

    def __init__(self, tool_names: Collection[str] | None = None) -> None:
        self._tool_names = tool_names
        self._state = _State.UNDECIDED
        self._text = ""
        self._held = ""  # the start of the completion, while it could still be MARKER
        self._expected = ""  # fixed text still to come (FIXED)
        self._after_fixed = _State.NAME
        self._name = ""
        self._arguments = PartialJSON()
        self._delta = ""  # the delta being read, for error texts
        self.calls: list[ParsedCall] = []

    @property
    def is_calls(self) -> bool:
        """Whether the completion is calls (False while undecided or for content)."""
        return self._state not in (_State.UNDECIDED, _State.CONTENT)

    def feed(self, delta: str) -> list[ToolEvent]:
        """Read the next piece of the completion and return what it added.

        Raises:
            ToolCallFormatError: the text leaves the format (an unknown tool name, fixed text that differs).
        """
        events: list[ToolEvent] = []
        self._delta = delta
        fragment_start = None  # where in `delta` the current arguments fragment began
        for offset, char in enumerate(delta):
            state = self._state
            if state is _State.CONTENT:
                rest = delta[offset:]
                released = events[-1] if events else None
                if isinstance(released, ContentDelta):  # the held text, released in this delta: one event
                    events.pop()
                    rest = released.text + rest
                events.append(ContentDelta(rest))
                break
            if state is _State.ARGUMENTS and fragment_start is None:
                fragment_start = offset
            self._step(char, len(self._text) + offset, events, delta, fragment_start)
            if self._state is not _State.ARGUMENTS:
                fragment_start = None
        else:
            if self._state is _State.ARGUMENTS and fragment_start is not None and fragment_start < len(delta):
                events.append(ArgumentsDelta(len(self.calls), delta[fragment_start:]))
        self._text += delta
        return events

    def finish(self) -> list[ToolEvent]:
        """The end of the completion: content held back comes out.

        Raises:
            ToolCallFormatError: the text ended inside a call.
        """
        if self._state is _State.UNDECIDED:
            self._state = _State.CONTENT
            return [ContentDelta(self._held)] if self._held else []
        if self._state not in (_State.CONTENT, _State.BETWEEN):
            raise ToolCallFormatError(
                "the completion ended inside a tool call", text=self._text, offset=len(self._text)
            )
        return []

    def _step(self, char: str, position: int, events: list[ToolEvent], delta: str, fragment_start: int | None) -> None:
        state = self._state
        if state is _State.UNDECIDED:
            self._held += char
            if self._held == MARKER:
                self._expect(CALL_OPEN[len(MARKER) :] + NAME_OPEN, _State.NAME)
            elif not MARKER.startswith(self._held):
                self._state = _State.CONTENT
                events.append(ContentDelta(self._held))
        elif state is _State.FIXED:
            if char != self._expected[0]:
                self._fail(f"expected {self._expected!r}", position)
            self._expected = self._expected[1:]
            if not self._expected:
                self._state = self._after_fixed
        elif state is _State.NAME:
            if char != '"':
                self._name += char
                return
            if self._tool_names is not None and self._name not in self._tool_names:
                self._fail(f"no tool named {self._name!r}", position)
            events.append(CallStart(len(self.calls), self._name))
            self._expect(ARGUMENTS_OPEN[1:], _State.ARGUMENTS)
        elif state is _State.ARGUMENTS:
            self._arguments.feed(char)
            if self._arguments.container != "{":
                self._fail("the arguments are a JSON object", position)
            if self._arguments.is_closed:
                if fragment_start is not None:
                    events.append(
                        ArgumentsDelta(len(self.calls), delta[fragment_start : position - len(self._text) + 1])
                    )
                arguments = self._arguments.text.strip()
                events.append(CallEnd(len(self.calls), arguments))
                self.calls.append(ParsedCall(self._name, arguments))
                self._name, self._arguments = "", PartialJSON()
                self._expect(CALL_CLOSE, _State.BETWEEN)
        elif state is _State.BETWEEN:
            self._state = _State.FIXED
            self._expected = (CALL_SEPARATOR + CALL_OPEN + NAME_OPEN)[1:]
            self._after_fixed = _State.NAME
            if char != CALL_SEPARATOR:
                self._fail("expected the end, or another tool call", position)

    def _expect(self, text: str, then: _State) -> None:
        self._state, self._expected, self._after_fixed = _State.FIXED, text, then

    def _fail(self, reason: str, position: int) -> None:
        raise ToolCallFormatError(reason, text=self._text + self._delta, offset=position)


def parse_tool_output(text: str, tool_names: Collection[str] | None = None) -> ParsedOutput:
    """The content or the calls of a whole completion.

    Raises:
        ToolCallFormatError: the text leaves the format.
    """
    parser = ToolCallParser(tool_names)
    parser.feed(text)
    parser.finish()
    if parser.is_calls:
        return ParsedOutput(None, tuple(parser.calls))
    return ParsedOutput(text, ())
