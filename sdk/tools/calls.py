"""`ToolCall`: one call the model made, its arguments validated, ready to run.

The arguments are validated by the tool's model (functions and Pydantic models: `arguments` is a
model instance) or against its JSON Schema (raw schemas: `arguments` is the dict). `invoke` runs the
tool's function with them (a coroutine function is awaited by `ainvoke`; `invoke` refuses it).
"""

from __future__ import annotations

import inspect
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

import pydantic

from sdk.errors import SDKError
from sdk.tools.definitions import Tool

__all__ = ["ToolCall", "new_call_id"]


def new_call_id() -> str:
    """A fresh call id, `call_` and 24 random hex digits (OpenAI's form)."""
    return "call_" + secrets.token_hex(12)


@dataclass(frozen=True)
class ToolCall:
    """A tool call from the model.

    Attributes:
        id: `call_...`, what the result message's `tool_call_id` refers to.
        name: the tool's name.
        arguments: the validated arguments: an instance of the tool's Pydantic model (functions and
            models), or the checked dict (raw JSON Schema tools).
        arguments_json: the arguments as the model wrote them (a JSON object's text).
        tool: the tool called.
    """

    id: str
    name: str
    arguments: Any
    arguments_json: str
    tool: Tool = field(repr=False)

    def invoke(self) -> Any:
        """Run the tool's function with the arguments and return what it returns.

        Raises:
            SDKError: the tool has no function (a model or schema tool), or it is a coroutine
                function (use `ainvoke`).
            Whatever the function raises.
        """
        function = self._function()
        if inspect.iscoroutinefunction(function):
            raise SDKError(f"tool {self.name!r} is async; use `await call.ainvoke()`")
        return function(**self._keyword_arguments())

    async def ainvoke(self) -> Any:
        """Run the tool's function (awaited when it is async) with the arguments.

        Raises:
            SDKError: the tool has no function. Whatever the function raises.
        """
        result = self._function()(**self._keyword_arguments())
        return await result if inspect.isawaitable(result) else result

    def to_openai(self) -> dict[str, Any]:
        """The call as an assistant message's `tool_calls` item (OpenAI's wire form)."""
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments_json}}

    def _function(self) -> Any:
        if self.tool.function is None:
            raise SDKError(f"tool {self.name!r} has no Python function to run; read `call.arguments` instead")
        return self.tool.function

    def _keyword_arguments(self) -> dict[str, Any]:
        """The function's keyword arguments: the model's fields as validated (nested models stay models)."""
        if isinstance(self.arguments, pydantic.BaseModel):
            return {name: getattr(self.arguments, name) for name in type(self.arguments).model_fields}
        return dict(json.loads(self.arguments_json))
