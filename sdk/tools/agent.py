"""The agent loop: generate, run the tools the model called, feed their results back, repeat.

Each turn is one `LLM.run` with the tools. When the model calls tools, the calls join the
conversation as an assistant message with `tool_calls`, each function runs (async ones awaited) and
its result joins as a `role: "tool"` message; when it answers instead, that answer's `Result` is the
loop's. After `max_turns` turns of calls, one last turn with `tool_choice="none"` makes it answer.
Only the first turn uses the caller's `tool_choice` (a forced call every turn would never end).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import pydantic

from runtime.errors import RequestError
from sdk.results import Result, add_usage
from sdk.tools.definitions import ToolLike

__all__ = ["run_tool_loop", "tool_result_text"]

#: `LLM.run` as the loop calls it.
RunCall = Callable[..., Awaitable[Result[Any]]]


async def run_tool_loop(
    run: RunCall,
    prompt: str | Sequence[Mapping[str, Any]],
    tools: Sequence[ToolLike],
    *,
    output: Any,
    max_turns: int,
    options: Mapping[str, Any],
) -> Result[Any]:
    """Run the loop (see the module docstring) and return the final answer's `Result`, its usage
    summed over the turns and its `text` the last turn's.

    Raises:
        RequestError: a prompt that is not a str or a message list, or `max_turns` below 1.
        Whatever `LLM.run` raises, and what a tool's function raises.
    """
    if isinstance(max_turns, bool) or not isinstance(max_turns, int) or max_turns < 1:
        raise RequestError(f"must be an int >= 1, got {max_turns!r}", "max_turns")
    if isinstance(prompt, str):
        messages: list[dict[str, Any]] = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, Sequence) and all(isinstance(message, Mapping) for message in prompt):
        messages = [dict(message) for message in prompt if isinstance(message, Mapping)]
    else:
        raise RequestError(f"expected a str or a list of messages, got {type(prompt).__name__}", "prompt")
    usages = []

    async def turn(choice: object) -> Result[Any]:
        result = await run(messages, output=output, **{**options, "tools": tools, "tool_choice": choice})
        usages.append(result.usage)
        return result

    choice = options.get("tool_choice", "auto")
    for _ in range(max_turns):
        result = await turn(choice)
        if not result.tool_calls:
            return dataclasses.replace(result, usage=functools.reduce(add_usage, usages))
        messages.append(
            {"role": "assistant", "content": None, "tool_calls": [c.to_openai() for c in result.tool_calls]}
        )
        for call in result.tool_calls:
            value = await call.ainvoke()
            messages.append({"role": "tool", "tool_call_id": call.id, "content": tool_result_text(value)})
        choice = "auto"
    result = await turn("none")
    return dataclasses.replace(result, usage=functools.reduce(add_usage, usages))


def tool_result_text(value: Any) -> str:
    """A tool's return value as a `role: "tool"` message's content: a str as is, else JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump_json()
    return json.dumps(value, default=str, ensure_ascii=False)
