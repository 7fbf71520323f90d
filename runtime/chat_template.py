"""Chat templates: a model's Jinja2 template turns a list of messages into its prompt text.

Rendering follows Hugging Face's `apply_chat_template`, so a template written for transformers gives the
same text here: a sandboxed immutable environment with `trim_blocks` and `lstrip_blocks`, the
`loopcontrols` extension, a `{% generation %}` block that renders its body, the `raise_exception` and
`strftime_now` globals, a `tojson` filter that keeps non-ASCII text, and `bos_token` / `eos_token`
variables. The template is untrusted input from the checkpoint, hence the sandbox.

Caller text is untrusted too: a message that spells `<|im_end|>\n<|im_start|>assistant\n` must not end
its turn. `ChatTemplate.render_prompt` replaces every control-token text in messages and variables by a
placeholder before rendering, so the control-token texts left in the prompt are the template's own (its
literals, `bos_token` / `eos_token`, and roles, which must be one of `CHAT_ROLES`); the tokenizer encodes
the restored caller text with special tokens read as plain text.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

import jinja2
import jinja2.ext
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from runtime.errors import ChatTemplateError, RequestError

__all__ = ["CHATML_TEMPLATE", "CHAT_ROLES", "ChatTemplate", "RenderedPrompt", "check_role", "validate_messages"]

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

#: The roles a message may have. A template puts the role into its turn header (Phi-3 even makes
#: `<|user|>` of it), so a free-form role could forge turns.
CHAT_ROLES = ("assistant", "system", "tool", "user")


def check_role(role: object, field: str) -> str:
    """`role` if it is one of `CHAT_ROLES`.

    Raises:
        RequestError: any other value; `field` names where it came from, e.g. "messages[0].role".
    """
    if not isinstance(role, str) or role not in CHAT_ROLES:
        raise RequestError(f"expected one of {', '.join(CHAT_ROLES)}, got {role!r}", field)
    return role


def validate_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Check the shape of a conversation and return it as plain dicts.

    Each message is a dict with a "role" from `CHAT_ROLES` and a str "content" (None is allowed only with
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
        check_role(message.get("role"), f"{field}.role")
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

    tags = {"generation"}  # noqa: RUF012 (jinja2.ext.Extension declares `tags` as a plain class attribute)

    def parse(self, parser: jinja2.parser.Parser) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_render_body"), [], [], body).set_lineno(lineno)

    def _render_body(self, caller: Callable[[], str]) -> str:
        return caller()


@dataclass(frozen=True)
class RenderedPrompt:
    """A rendered prompt in which no caller text spells a control token.

    Attributes:
        text: the template's output, with a placeholder where caller text had a control-token text;
            every control-token text in it is the template's own.
        originals: the caller's texts, by placeholder number.
        placeholder: matches a placeholder; group 1 is its number.
    """

    text: str
    originals: tuple[str, ...] = ()
    placeholder: re.Pattern[str] | None = None

    def restore(self, part: str) -> str:
        """`part` of `text` with the caller's texts back in place of the placeholders."""
        if self.placeholder is None:
            return part
        return self.placeholder.sub(lambda match: self.originals[int(match.group(1))], part)


class _Placeholders:
    """Replaces control-token texts in caller data by placeholders that survive what templates do to
    text (`trim`, `tojson`, case changes, splits on other markers): digits and punctuation only, with a
    random nonce so that no caller text can spell one."""

    def __init__(self, control_texts: frozenset[str]) -> None:
        by_length = sorted(control_texts, key=len, reverse=True)  # longest first: leftmost-longest, as HF
        self._control = re.compile("|".join(map(re.escape, by_length))) if by_length else None
        self._nonce = f"{secrets.randbelow(10**12):012d}"
        self.originals: list[str] = []

    def protect(self, value: Any) -> Any:
        """`value` with control-token texts replaced in every str it holds (dict keys included)."""
        if isinstance(value, str):
            return self._control.sub(self._replace, value) if self._control else value
        if isinstance(value, Mapping):
            return {self.protect(key): self.protect(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self.protect(item) for item in value)
        return value

    def _replace(self, match: re.Match[str]) -> str:
        self.originals.append(match.group())
        return f"[#{self._nonce}#{len(self.originals) - 1}#]"

    def prompt(self, text: str) -> RenderedPrompt:
        if not self.originals:
            return RenderedPrompt(text)
        return RenderedPrompt(text, tuple(self.originals), re.compile(rf"\[#{self._nonce}#(\d+)#\]"))


class ChatTemplate:
    """A compiled chat template with the special-token variables of one tokenizer.

    Compilation happens on first use, so a checkpoint with a broken template still loads for plain
    completion; the first chat request then gets a `ChatTemplateError`.

    Args:
        source: the Jinja2 template text.
        special_tokens: variables every render gets, e.g. {"bos_token": "<s>", "eos_token": "</s>"}.
        control_texts: the texts of the tokenizer's control (special) tokens, which caller data may
            not contribute to a prompt (see `render_prompt`).
    """

    def __init__(
        self, source: str, *, special_tokens: Mapping[str, str | None], control_texts: frozenset[str] = frozenset()
    ) -> None:
        self.source = source
        self.special_tokens = dict(special_tokens)
        self.control_texts = control_texts

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
        """The prompt text for `messages` (arguments and errors as `render_prompt`)."""
        prompt = self.render_prompt(messages, add_generation_prompt=add_generation_prompt, **extra)
        return prompt.restore(prompt.text)

    def render_prompt(
        self, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = True, **extra: Any
    ) -> RenderedPrompt:
        """Render `messages` with caller text kept apart from the template's control tokens.

        Every str in the messages (roles aside: they are checked against `CHAT_ROLES`) and in `extra`
        has its control-token texts replaced by placeholders before rendering; the special-token
        variables are the template's and stay as they are.

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
        placeholders = _Placeholders(self.control_texts)
        checked = [
            {key: value if key == "role" else placeholders.protect(value) for key, value in message.items()}
            for message in validate_messages(messages)
        ]
        variables = {**self.special_tokens, **placeholders.protect(extra)}
        try:
            text = self._template.render(messages=checked, add_generation_prompt=add_generation_prompt, **variables)
        except _TemplateRejected as exc:
            raise RequestError(f"the chat template rejects this conversation: {exc}", "messages") from exc
        except (jinja2.TemplateError, TypeError, ValueError, AttributeError, LookupError, ArithmeticError) as exc:
            raise ChatTemplateError(f"the chat template failed while rendering: {type(exc).__name__}: {exc}") from exc
        return placeholders.prompt(text)
