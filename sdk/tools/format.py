"""The tool-call format: how calls are written in a completion, and how tools and past calls are
put in the prompt. `docs/tools.md` documents it for users.

A completion with tool calls is one or more blocks, separated by one newline, and nothing else:

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

This is the Hermes / Qwen2.5 / Qwen3 format, byte for byte as their chat templates render a past
call (`'<tool_call>\\n{"name": "' + name + '", "arguments": ' + arguments|tojson + '}\\n</tool_call>'`),
so a model trained on it writes it natively, and the constraint (`sdk.tools.constraint`) fixes every
byte outside the arguments. A completion without calls never starts with `MARKER`.

Three ways to put it in the prompt (`ToolFormat`):

- `HERMES`: the model's chat template has a tool format of this kind (`detect_tool_format`); the
  template renders the tools (template variable `tools`, OpenAI tool dicts) and the history (assistant
  `tool_calls`, `role: "tool"` results) itself.
- `GENERIC`: any other template (the embedded SmolLM2's). The system message lists the tools (name,
  description, arguments' shape) and says how to call; past calls become assistant text in the
  format above, tool results user messages of `<tool_response>` blocks, so templates that know
  nothing of tools render them too.
- `OPENAI`: a remote server's OpenAI-compatible API (`sdk.backends.remote`): the history keeps its
  OpenAI form and the tools travel in the request's `tools` field, so the server's own template
  renders both; its calls come back as `tool_calls`, which the remote backend writes in the format
  above.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sdk.schema_text import MAX_DESCRIPTION_CHARS, describe_schema
from sdk.tools.definitions import Toolset
from sdk.tools.errors import ToolHistoryError

__all__ = [
    "ARGUMENTS_OPEN",
    "CALL_CLOSE",
    "CALL_OPEN",
    "CALL_SEPARATOR",
    "MARKER",
    "NAME_OPEN",
    "RESPONSE_CLOSE",
    "RESPONSE_OPEN",
    "ToolFormat",
    "ToolPrompt",
    "detect_tool_format",
    "render_call",
    "tool_prompt",
    "tools_instruction",
]

#: What starts every call; a completion without calls never starts with it.
MARKER = "<tool_call>"
CALL_OPEN = MARKER + "\n"
NAME_OPEN = '{"name": "'
ARGUMENTS_OPEN = '", "arguments": '
CALL_CLOSE = "}\n</tool_call>"
#: Between two calls of one completion.
CALL_SEPARATOR = "\n"
RESPONSE_OPEN = "<tool_response>\n"
RESPONSE_CLOSE = "\n</tool_response>"


class ToolFormat(enum.Enum):
    """How tools and past calls reach the prompt (the calls themselves are written alike)."""

    GENERIC = "generic"
    HERMES = "hermes"
    OPENAI = "openai"


def detect_tool_format(chat_template: str | None) -> ToolFormat:
    """`HERMES` for a chat template that takes a `tools` variable and writes `<tool_call>` blocks
    (Hermes 2 Pro, Qwen2.5, Qwen3, ...), else `GENERIC` (None: the model has no template)."""
    if chat_template is not None and "tools" in chat_template and MARKER in chat_template:
        return ToolFormat.HERMES
    return ToolFormat.GENERIC


def render_call(name: str, arguments_json: str) -> str:
    """One call block, as the model writes it (`arguments_json`: the arguments object's JSON text)."""
    return f"{CALL_OPEN}{NAME_OPEN}{name}{ARGUMENTS_OPEN}{arguments_json}{CALL_CLOSE}"


def tools_instruction(tools: Toolset, *, mode: str, name: str | None = None) -> str:
    """The system-message text of the generic format: the tools, how to call, and when.

    Args:
        tools: the tools the model may call.
        mode: "auto" (text or calls), "required" (calls) or "named" (a call of `name`).
        name: the tool a "named" choice forces.
    """
    room = max(300, MAX_DESCRIPTION_CHARS // len(tools))
    entries = []
    for tool in tools:
        description = f": {tool.description}" if tool.description else ""
        shape = describe_schema(tool.parameters, max_chars=room).replace("\n", "\n  ")
        entries.append(f"- {tool.name}{description}\n  arguments: {shape}")
    example = render_call("TOOL_NAME", "{ARGUMENTS}")
    when = {
        "auto": "Call a tool when it helps; otherwise answer directly, without a <tool_call> block.",
        "required": "Answer by calling one or more tools now.",
        "named": f"Answer by calling {name} now.",
    }[mode]
    return (
        "You can call these tools:\n" + "\n".join(entries) + "\n\n"
        f"To call a tool, reply with one block per call, and nothing else:\n{example}\n"
        f"Tool results come back in {RESPONSE_OPEN.strip()} blocks. {when}"
    )


@dataclass(frozen=True)
class ToolPrompt:
    """Messages ready for the chat template, and the template variables to render them with.

    Attributes:
        messages: the conversation, tool calls and results in the format's form.
        template_variables: `{"tools": [...]}` for `HERMES` with tools offered, else empty.
    """

    messages: list[dict[str, Any]]
    template_variables: dict[str, Any] = field(default_factory=dict)


def tool_prompt(
    messages: Sequence[Mapping[str, Any]],
    tools: Toolset | None,
    *,
    tool_format: ToolFormat,
    mode: str,
    name: str | None = None,
) -> ToolPrompt:
    """The prompt of a call with tools, or of a conversation holding past calls.

    Args:
        messages: OpenAI-style chat messages; assistant messages may hold `tool_calls` (each
            `{"id", "type": "function", "function": {"name", "arguments"}}`, arguments a JSON
            object's text or a dict), `role: "tool"` messages a `tool_call_id`.
        tools: the tools offered now (None: none, but the history may still hold calls).
        tool_format: `GENERIC` or `HERMES` (see `detect_tool_format`), or `OPENAI` (a server that
            takes the tools itself: no template variables).
        mode: "none", "auto", "required" or "named"; "none" keeps the tools out of the prompt.
        name: the tool a "named" choice forces.

    Raises:
        ToolHistoryError: a malformed past call or result (names the message index).
    """
    offered = tools if tools is not None and mode != "none" else None
    if tool_format is not ToolFormat.GENERIC:
        rendered = [_native_message(message, index) for index, message in enumerate(messages)]
        variables: dict[str, Any] = {}
        if offered and tool_format is ToolFormat.HERMES:
            variables["tools"] = [tool.to_openai() for tool in offered]
        return ToolPrompt(rendered, variables)
    rendered = _generic_history(messages)
    if offered:
        instruction = tools_instruction(offered, mode=mode, name=name)
        if rendered and rendered[0].get("role") == "system":
            head = rendered[0]
            head["content"] = "\n\n".join(part for part in (str(head.get("content") or ""), instruction) if part)
        else:
            rendered.insert(0, {"role": "system", "content": instruction})
    return ToolPrompt(rendered)


def _generic_history(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Past calls as assistant text in the call format, consecutive tool results as one user message."""
    rendered: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool_call_id -> the tool's name
    results: dict[str, Any] | None = None  # the user message collecting the current run of results
    for index, message in enumerate(messages):
        role = message.get("role")
        if role == "tool":
            block = RESPONSE_OPEN + _tool_result(message, index, names) + RESPONSE_CLOSE
            if results is None:
                results = {"role": "user", "content": block}
                rendered.append(results)
            else:
                results["content"] += "\n" + block
            continue
        results = None
        if role == "assistant" and message.get("tool_calls"):
            calls = _history_calls(message, index)
            names.update((call_id, call_name) for call_id, call_name, _ in calls if call_id)
            blocks = [
                render_call(call_name, json.dumps(arguments, ensure_ascii=False)) for _, call_name, arguments in calls
            ]
            content = message.get("content")
            text = CALL_SEPARATOR.join(([content] if isinstance(content, str) and content else []) + blocks)
            rendered.append({"role": "assistant", "content": text})
        else:
            rendered.append(dict(message))
    return rendered


def _tool_result(message: Mapping[str, Any], index: int, names: Mapping[str, str]) -> str:
    """A tool result's block body: `{"name": ..., "content": ...}` when the call is known."""
    content = message.get("content")
    if not isinstance(content, str):
        raise ToolHistoryError(
            f"a tool result's content is a str, got {type(content).__name__}",
            f"messages[{index}].content",
            message_index=index,
        )
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str):
        raise ToolHistoryError(
            "a tool result needs the tool_call_id of its call", f"messages[{index}].tool_call_id", message_index=index
        )
    name = names.get(call_id) or message.get("name")
    if not isinstance(name, str):
        return content
    try:
        value: Any = json.loads(content)
    except ValueError:
        value = content
    return json.dumps({"name": name, "content": value}, ensure_ascii=False)


def _native_message(message: Mapping[str, Any], index: int) -> dict[str, Any]:
    """A message for a template with a tool format: calls checked, arguments as dicts (templates
    write them with `tojson`)."""
    plain = dict(message)
    if message.get("role") == "assistant" and message.get("tool_calls"):
        plain["tool_calls"] = [
            {"id": call_id, "type": "function", "function": {"name": call_name, "arguments": arguments}}
            for call_id, call_name, arguments in _history_calls(message, index)
        ]
    return plain


def _history_calls(message: Mapping[str, Any], index: int) -> list[tuple[str | None, str, dict[str, Any]]]:
    """(id, name, arguments) of each past call of an assistant message.

    Raises:
        ToolHistoryError: a call that is not a dict, lacks a name, or whose arguments are not a
            JSON object (or its text).
    """
    calls = message.get("tool_calls")
    if not isinstance(calls, Sequence) or isinstance(calls, (str, bytes)):
        raise ToolHistoryError("expected a list of tool calls", f"messages[{index}].tool_calls", message_index=index)
    found = []
    for number, call in enumerate(calls):
        where = f"messages[{index}].tool_calls[{number}]"
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping):
            raise ToolHistoryError('expected {"type": "function", "function": {...}}', where, message_index=index)
        name, arguments = function.get("name"), function.get("arguments", "{}")
        if not isinstance(name, str) or not name:
            raise ToolHistoryError("expected the tool's name", f"{where}.function.name", message_index=index)
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except ValueError as exc:
                raise ToolHistoryError(
                    f"not valid JSON: {exc}", f"{where}.function.arguments", message_index=index
                ) from exc
        if not isinstance(arguments, dict):
            raise ToolHistoryError(
                f"expected a JSON object, got {type(arguments).__name__}",
                f"{where}.function.arguments",
                message_index=index,
            )
        call_id = call.get("id")
        found.append((call_id if isinstance(call_id, str) else None, name, arguments))
    return found
