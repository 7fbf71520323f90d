"""Chat templates: a model's Jinja2 template turns a list of messages into its prompt text.

Rendering follows Hugging Face's `apply_chat_template`, so a template written for transformers gives the
same text here: a sandboxed immutable environment with `trim_blocks` and `lstrip_blocks`, the
`loopcontrols` extension, a `{% generation %}` block that renders its body, the `raise_exception` and
`strftime_now` globals, a `tojson` filter that keeps non-ASCII text, and `bos_token` / `eos_token`
variables. The template is untrusted input from the checkpoint, hence the sandbox.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from functools import cached_property
from typing import Any, ClassVar

import jinja2
import jinja2.ext
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from runtime.errors import ChatTemplateError, RequestError

__all__ = ["CHATML_TEMPLATE", "ChatTemplate", "validate_messages"]

#: The template used when a checkpoint has none: ChatML (`<|im_start|>role\ncontent<|im_end|>\n`), the
#: format of SmolLM2, Qwen2 and many fine-tunes. For a model not trained on ChatML it is plain text, so
#: prefer a checkpoint that ships its own template.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_MESSAGE_KEYS = ("content", "name", "role", "tool_call_id", "tool_calls")


def validate_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Check the shape of a conversation and return it as plain dicts.

    Each message is a dict with a non-empty str "role" and a str "content" (None is allowed only with
    "tool_calls"); the optional keys are "name" (str), "tool_call_id" (str) and "tool_calls" (a list of
    dicts). Other keys are rejected rather than passed to a template that would silently ignore them.

    Args:
        messages: the conversation, oldest first.

    Returns:
        A list of fresh dicts, safe to hand to a template.

    Raises:
        RequestError: the first problem found; `field` is its path, e.g. "messages[1].content".
    """
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise RequestError(f"expected a list of message dicts, got {type(messages).__name__}", "messages")
    checked = []
    for index, message in enumerate(messages):
        field = f"messages[{index}]"
        if not isinstance(message, Mapping):
            raise RequestError(f"expected a dict with 'role' and 'content', got {type(message).__name__}", field)
        for key in message:
            if key not in _MESSAGE_KEYS:
                raise RequestError(
                    f"unknown message key; allowed keys are {', '.join(_MESSAGE_KEYS)}", f"{field}.{key}"
                )
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise RequestError(f"expected a non-empty str, got {role!r}", f"{field}.role")
        if "content" not in message:
            raise RequestError("missing", f"{field}.content")
        content = message["content"]
        if not (isinstance(content, str) or (content is None and "tool_calls" in message)):
            raise RequestError(f"expected a str, got {type(content).__name__}", f"{field}.content")
        for key in ("name", "tool_call_id"):
            if key in message and not isinstance(message[key], str):
                raise RequestError(f"expected a str, got {type(message[key]).__name__}", f"{field}.{key}")
        tool_calls = message.get("tool_calls", [])
        if not isinstance(tool_calls, list) or not all(isinstance(call, Mapping) for call in tool_calls):
            raise RequestError("expected a list of dicts", f"{field}.tool_calls")
        checked.append(dict(message))
    return checked


class _TemplateRejected(Exception):
    """Raised by a template's `raise_exception(...)`: the template refuses the conversation."""


def _raise_exception(message: str) -> None:
    raise _TemplateRejected(message)


def _tojson(
    value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None, sort_keys: bool = False
) -> str:
    # Jinja's own tojson escapes HTML characters, which would change the prompt text.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(date_format: str) -> str:
    return datetime.now().strftime(date_format)


class _GenerationBlock(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}` marks the assistant's text for HF's training masks;
    for rendering a prompt it is its body."""

    tags: ClassVar[set[str]] = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_render_body"), [], [], body).set_lineno(lineno)

    def _render_body(self, caller: Callable[[], str]) -> str:
        return caller()


class ChatTemplate:
    """A compiled chat template with the special-token variables of one tokenizer.

    Compilation happens on first use, so a checkpoint with a broken template still loads for plain
    completion; the first chat request then gets a `ChatTemplateError`.

    Args:
        source: the Jinja2 template text.
        special_tokens: variables every render gets, e.g. {"bos_token": "<s>", "eos_token": "</s>"}.
    """

    def __init__(self, source: str, *, special_tokens: Mapping[str, str | None]) -> None:
        self.source = source
        self.special_tokens = dict(special_tokens)

    @cached_property
    def _template(self) -> jinja2.Template:
        environment = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols, _GenerationBlock]
        )
        environment.filters["tojson"] = _tojson
        environment.globals["raise_exception"] = _raise_exception
        environment.globals["strftime_now"] = _strftime_now
        try:
            return environment.from_string(self.source)
        except jinja2.TemplateSyntaxError as exc:
            raise ChatTemplateError(
                f"the chat template does not compile: {exc.message} (template line {exc.lineno})"
            ) from exc

    def render(self, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = True, **extra: Any) -> str:
        """The prompt text for `messages`.

        Args:
            messages: the conversation (checked by `validate_messages`).
            add_generation_prompt: end with the header that opens the assistant's turn.
            **extra: more template variables (`tools`, `documents`, custom flags); they override the
                special-token variables, as in HF.

        Raises:
            RequestError: malformed messages, or the template's `raise_exception` rejected them
                (field "messages").
            ChatTemplateError: the template does not compile or fails while rendering.
        """
        checked = validate_messages(messages)
        variables = {**self.special_tokens, **extra}
        try:
            return self._template.render(messages=checked, add_generation_prompt=add_generation_prompt, **variables)
        except _TemplateRejected as exc:
            raise RequestError(f"the chat template rejects this conversation: {exc}", "messages") from exc
        except (jinja2.TemplateError, TypeError, ValueError, AttributeError, LookupError, ArithmeticError) as exc:
            raise ChatTemplateError(f"the chat template failed while rendering: {type(exc).__name__}: {exc}") from exc
