"""A call's tools, as the SDK's `LLM.run` / `stream` use them: the prompt and constraint going in
(`prepare_tools`), the validated `ToolCall`s coming out (`ToolRequest.read`).

The prompt takes the backend's `ToolFormat`: the generic format, the model's own template (the
tools as a template variable), or a remote server's `tools` field. A call's completion is the answer
or calls, never both, written in the call format whatever the backend (a remote one writes the calls
it receives so); `read` returns the validated calls, or None when the completion is the answer.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import pydantic

from runtime.engine.constraints import Constraint as RuntimeConstraint
from runtime.engine.outputs import Usage
from runtime.errors import RequestError
from sdk.errors import IncompleteOutputError, ValidationError
from sdk.outputs import OutputSpec
from sdk.tools.calls import ToolCall
from sdk.tools.constraint import ToolChoice, resolve_tool_choice, tool_call_constraint
from sdk.tools.definitions import Toolset, toolset
from sdk.tools.errors import ToolCallFormatError
from sdk.tools.format import ToolFormat, ToolPrompt, tool_prompt
from sdk.tools.parsing import CallEnd, ContentDelta, ParsedCall, ToolCallParser, parse_tool_output

__all__ = ["StreamedCalls", "ToolRequest", "prepare_tools"]


@dataclass(frozen=True)
class ToolRequest:
    """The tools of one call, with the choice and whether calls may come in parallel.

    Attributes:
        id_prefix: random, per call: call `i` of the completion gets id `call_<id_prefix>_<i>`, so
            the calls a stream yields early keep their ids in the final result.
    """

    tools: Toolset
    choice: ToolChoice
    parallel: bool
    id_prefix: str = field(default_factory=lambda: secrets.token_hex(10))

    @property
    def names(self) -> frozenset[str]:
        return frozenset(tool.name for tool in self.tools)

    def read(self, text: str, *, usage: Usage, is_cut: bool) -> list[ToolCall] | None:
        """The validated calls of a completion, or None when it is the answer.

        Raises:
            IncompleteOutputError: the completion was cut (`is_cut`) inside a call.
            ValidationError: arguments the tool's model rejects (`loc` starts with "tool_calls", the
                call's index and the tool's name); or, only from a backend that did not enforce the
                constraint, text that breaks the format (type "tool_call_format") or calls the choice
                does not allow: none when one is required, another tool than the named one, several
                without `parallel` (type "tool_choice").
        """
        try:
            parsed = parse_tool_output(text, self.names)
        except ToolCallFormatError as exc:
            if is_cut:
                raise IncompleteOutputError(
                    "max_tokens (or the context window) cut a tool call short", text=text, usage=usage
                ) from exc
            detail = {"type": "tool_call_format", "loc": (), "msg": str(exc), "input": text}
            raise ValidationError([detail], text=text, usage=usage) from exc
        choice_error = self._choice_error(len(parsed.calls), {call.name for call in parsed.calls})
        if choice_error is not None:
            detail = {"type": "tool_choice", "loc": ("tool_calls",), "msg": choice_error, "input": text}
            raise ValidationError([detail], text=text, usage=usage)
        if not parsed.calls:
            return None
        calls: list[ToolCall] = []
        details: list[dict[str, Any]] = []
        for index, parsed_call in enumerate(parsed.calls):
            try:
                calls.append(self.call(index, parsed_call))
            except ValidationError as exc:
                details.extend(exc.details)
        if details:
            raise ValidationError(details, text=text, usage=usage)
        return calls

    def _choice_error(self, num_calls: int, names: set[str]) -> str | None:
        """What the choice forbids in a completion with these calls (None: nothing)."""
        mode = self.choice.mode
        if num_calls == 0:
            return f"tool_choice={mode!r} requires a tool call, got an answer" if mode != "auto" else None
        if mode == "named" and names != {self.choice.name}:
            return f"tool_choice names {self.choice.name!r}, got calls of {sorted(names)}"
        if num_calls > 1 and (mode == "named" or not self.parallel):
            return f"one call allowed (parallel_tool_calls=False or a named tool), got {num_calls}"
        return None

    def call(self, index: int, parsed: ParsedCall) -> ToolCall:
        """The `ToolCall` of the completion's call `index` (a name among the tools).

        Raises:
            ValidationError: the tool's model or schema rejects the arguments (usage unknown here: 0).
        """
        loc: tuple[Any, ...] = ("tool_calls", index, parsed.name)
        tool = self.tools.get(parsed.name)
        if tool is None:  # the parser already refuses unknown names; a caller's ParsedCall may not
            detail = {"type": "tool_call_format", "loc": loc, "msg": "no such tool", "input": parsed.name}
            raise ValidationError([detail], text=parsed.arguments, usage=Usage(0, 0))
        try:
            arguments = tool.validate_arguments(parsed.arguments)
        except pydantic.ValidationError as exc:
            details = [{**error, "loc": (*loc, *error["loc"])} for error in exc.errors(include_url=False)]
            raise ValidationError(details, text=parsed.arguments, usage=Usage(0, 0)) from exc
        except jsonschema.ValidationError as exc:
            detail = {
                "type": "json_schema",
                "loc": (*loc, *exc.absolute_path),
                "msg": exc.message,
                "input": exc.instance,
            }
            raise ValidationError([detail], text=parsed.arguments, usage=Usage(0, 0)) from exc
        call_id = f"call_{self.id_prefix}_{index}"
        return ToolCall(call_id, tool.name, arguments, parsed.arguments, tool)


def prepare_tools(
    messages: Sequence[Mapping[str, Any]],
    spec: OutputSpec,
    constraint: RuntimeConstraint | None,
    options: Mapping[str, Any],
    tool_format: ToolFormat = ToolFormat.GENERIC,
) -> tuple[ToolPrompt, RuntimeConstraint | None, ToolRequest | None]:
    """The prompt and constraint of a call with `tools`, `tool_choice` and `parallel_tool_calls`.

    Without tools (or with `tool_choice="none"`) the constraint is the output's and no
    `ToolRequest` is made; past calls in the messages are rendered in `tool_format` either way.

    Raises:
        ToolDefinitionError, RequestError: bad tools, choice or flag, or tools with reasoning or
            self-consistency (`field` names the option); ToolHistoryError: a malformed past call.
    """
    tools_given, parallel = options["tools"], options["parallel_tool_calls"]
    if not isinstance(parallel, bool):
        raise RequestError(f"must be a bool, got {parallel!r}", "parallel_tool_calls")
    tools = None if tools_given is None else toolset(tools_given)
    choice = resolve_tool_choice(options["tool_choice"], tools)
    calls_allowed = tools is not None and choice.mode != "none"
    if calls_allowed and options["reasoning"]:
        raise RequestError("reasoning before tool calls is not supported; leave one out", "reasoning")
    if calls_allowed and options.get("samples", 1) > 1:
        raise RequestError("self-consistency does not vote on tool calls; leave one out", "samples")
    prompt = tool_prompt(messages, tools, tool_format=tool_format, mode=choice.mode, name=choice.name)
    if tools is None or not calls_allowed:
        return prompt, constraint, None
    composed = tool_call_constraint(tools, choice, parallel=parallel, answer=spec.constraint)
    return prompt, composed, ToolRequest(tools, choice, parallel)


class StreamedCalls:
    """Follows a streamed completion of a call with tools: its content, and its calls as they complete.

    Args:
        request: the call's tools.
    """

    def __init__(self, request: ToolRequest) -> None:
        self._request = request
        self._parser = ToolCallParser(request.names)
        self._calls: list[ToolCall] = []

    def feed(self, delta: str) -> tuple[str, list[ToolCall] | None]:
        """(the content this delta added, "" for calls; the calls so far when one completed in it, else None).

        A call whose arguments fail validation is left out here; the final result raises for it.

        Raises:
            ToolCallFormatError: the text leaves the format (a backend that did not enforce it).
        """
        content, completed = "", False
        for event in self._parser.feed(delta):
            if isinstance(event, ContentDelta):
                content += event.text
            elif isinstance(event, CallEnd):
                completed = True
                try:
                    self._calls.append(self._request.call(event.index, self._parser.calls[event.index]))
                except ValidationError:
                    continue
        return content, list(self._calls) if completed else None
