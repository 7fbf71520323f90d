"""Typed tool calling: one implementation for the SDK (`LLM.run(tools=...)`) and the server.

Nothing here depends on `LLM` or a backend. A caller with a tool request does:

    tools = toolset(request_tools)                      # definitions: functions, Pydantic models,
                                                        #   OpenAI tool dicts, Tool.from_schema(...);
                                                        #   ToolDefinitionError (field "tools[i]...")
    choice = resolve_tool_choice(tool_choice, tools)    # "auto" | "required" | "none" | a tool;
                                                        #   RequestError (field "tool_choice")
    prompt = tool_prompt(messages, tools, tool_format=detect_tool_format(tokenizer.chat_template),
                         mode=choice.mode, name=choice.name)
        # prompt.messages: history rendered (ToolHistoryError names the message index);
        # prompt.template_variables: {"tools": [...]} for templates with a native tool format
    constraint = tool_call_constraint(tools, choice, parallel=True, answer=output_constraint_or_None)
    ... generate under `constraint` with apply_chat_template(prompt.messages, **prompt.template_variables) ...
    parser = ToolCallParser({tool.name for tool in tools})
    for delta in stream: parser.feed(delta)   # ContentDelta | CallStart(index, name) once |
    parser.finish()                           #   ArgumentsDelta(index, text) | CallEnd(index, arguments)
    # or, for a whole text: parse_tool_output(text, names) -> ParsedOutput(content | calls)

The calls are written in one format (`sdk.tools.format`, `docs/tools.md`): `<tool_call>` blocks
holding `{"name": ..., "arguments": {...}}`, Hermes/Qwen's own; templates without a tool format get
the tools and past calls rendered as plain messages. `ToolCall` (with `new_call_id`) is the SDK's
validated call.
"""

from sdk.tools.calls import ToolCall, new_call_id
from sdk.tools.constraint import ChoiceMode, ToolChoice, resolve_tool_choice, tool_call_constraint
from sdk.tools.definitions import Tool, ToolLike, Toolset, as_tool, toolset
from sdk.tools.errors import ToolCallFormatError, ToolDefinitionError, ToolHistoryError
from sdk.tools.format import MARKER, ToolFormat, ToolPrompt, detect_tool_format, render_call, tool_prompt
from sdk.tools.parsing import (
    ArgumentsDelta,
    CallEnd,
    CallStart,
    ContentDelta,
    ParsedCall,
    ParsedOutput,
    ToolCallParser,
    ToolEvent,
    parse_tool_output,
)

__all__ = [
    "MARKER",
    "ArgumentsDelta",
    "CallEnd",
    "CallStart",
    "ChoiceMode",
    "ContentDelta",
    "ParsedCall",
    "ParsedOutput",
    "Tool",
    "ToolCall",
    "ToolCallFormatError",
    "ToolCallParser",
    "ToolChoice",
    "ToolDefinitionError",
    "ToolEvent",
    "ToolFormat",
    "ToolHistoryError",
    "ToolLike",
    "ToolPrompt",
    "Toolset",
    "as_tool",
    "detect_tool_format",
    "new_call_id",
    "parse_tool_output",
    "render_call",
    "resolve_tool_choice",
    "tool_call_constraint",
    "tool_prompt",
    "toolset",
]
