"""Errors of tool calling, placed in Stencil's hierarchy (`sdk.errors` draws the whole tree).

    RequestError (runtime)          a bad request; `field` names where
    ├── ToolDefinitionError         a tool that cannot be described or constrained ("tools[1]...")
    └── ToolHistoryError            a past tool call or result in the messages is malformed
    SDKError
    └── ToolCallFormatError         a completion that does not follow the tool-call format (only
                                    from a backend that did not enforce the constraint)

The first two are raised before anything is generated (the server answers them with HTTP 400 and
`param` = `field`).
"""

from __future__ import annotations

from runtime.errors import RequestError
from sdk.errors import SDKError

__all__ = ["ToolCallFormatError", "ToolDefinitionError", "ToolHistoryError"]


class ToolDefinitionError(RequestError):
    """A tool that cannot be turned into a schema and a constraint: an untyped parameter, a bad
    name, parameters that are not an object schema, two tools of one name.

    Attributes:
        field: where, e.g. "tools[2].function.parameters"; reason: what is wrong.
    """


class ToolHistoryError(RequestError):
    """A message of the conversation holds a malformed tool call or tool result (arguments that are
    not a JSON object, a call without a name, a result without `tool_call_id`).

    Attributes:
        message_index: the index of the offending message in the conversation.
        field: its path, e.g. "messages[3].tool_calls[0].function.arguments"; reason: what is wrong.
    """

    def __init__(self, reason: str, field: str, *, message_index: int) -> None:
        self.message_index = message_index
        super().__init__(reason, field)


class ToolCallFormatError(SDKError):
    """A completion that is not text, a typed answer or well-formed tool calls in the format.

    The constraint makes this impossible for a backend that enforces it; a remote server that
    ignored the constraint can still produce it.

    Attributes:
        text: the completion; offset: where in it the format broke; reason: what was expected.
    """

    def __init__(self, reason: str, *, text: str, offset: int) -> None:
        self.reason = reason
        self.text = text
        self.offset = offset
        super().__init__(f"tool-call format broken at offset {offset}: {reason}")
