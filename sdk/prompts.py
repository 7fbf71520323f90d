"""Prompt building: from the parts of a task to the chat messages the model's template renders.

A prompt is a plain string (one user message), a list of chat messages, or a `Prompt` with parts:

    system      instructions, the rules (constraints), the output's description, the reasoning layout
    examples    one user turn (the example's input) and one assistant turn (its output) each: few-shot
    user        the context, then the inputs

The output's description (the JSON shape of the type, the options of a Choice, ...) goes into the
system message by default, since a model that knows the fields writes better values; the constraint
guarantees the form either way. The description is bounded (`sdk.schema_text.MAX_DESCRIPTION_CHARS`:
large schemas and grammars are summarized), and a prompt too long for the context window says how
much of it the description took (`explain_prompt_too_long`). A system message the caller wrote is
kept and extended.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from runtime.chat_template import check_role
from runtime.errors import PromptTooLongError, RequestError
from sdk import reasoning as reasoning_layout
from sdk.outputs import OutputSpec

__all__ = ["Example", "Message", "Prompt", "PromptInput", "build_messages", "explain_prompt_too_long"]

#: One chat message: {"role": ..., "content": ...}.
Message = dict[str, str]


@dataclass(frozen=True)
class Example:
    """One solved example for few-shot prompting.

    Attributes:
        input: the example's input (a text, or named fields rendered one per line).
        output: its answer, a value of the output type (a model instance, a dict, a str, ...).
        reasoning: the reasoning that leads to it, shown when the call asks for reasoning.
    """

    input: str | Mapping[str, Any]
    output: Any
    reasoning: str | None = None


@dataclass(frozen=True)
class Prompt:
    """A task in parts; `build_messages` renders it for the model's chat template.

    Attributes:
        inputs: what to work on now: a text, or named fields rendered one per line.
        instructions: what to do with the inputs (the task).
        context: background the answer may draw on (documents, facts), placed before the inputs.
        constraints: rules the answer must follow, listed in the system message.
        examples: solved examples (few-shot); none is zero-shot.
    """

    inputs: str | Mapping[str, Any]
    instructions: str | None = None
    context: str | None = None
    constraints: Sequence[str] = ()
    examples: Sequence[Example] = field(default_factory=tuple)


#: What `generate` accepts as a prompt.
PromptInput = str | Prompt | Sequence[Mapping[str, str]]


def build_messages(prompt: PromptInput, spec: OutputSpec, *, reasoning: bool, describe_output: bool) -> list[Message]:
    """The chat messages of a call.

    Args:
        prompt: a user message, a list of chat messages, or a `Prompt`.
        spec: the resolved output (its description, and how examples' outputs are written).
        reasoning: ask for reasoning, then the marker, then the answer.
        describe_output: tell the model the output's form in the system message.

    Returns:
        Messages with "role" and "content", oldest first.

    Raises:
        RequestError: an empty prompt, a prompt of the wrong type, a message whose role is not one of
            `runtime.chat_template.CHAT_ROLES`, or an example whose output is not a value of the output
            type (`field` names which).
    """
    notes = []
    if describe_output:
        notes.append(spec.describe())
    if reasoning:
        notes.append(reasoning_layout.INSTRUCTION)
    system_notes = "\n\n".join(note for note in notes if note)
    if isinstance(prompt, str):
        if not prompt:
            raise RequestError("is empty", "prompt")
        return _system(system_notes) + [{"role": "user", "content": _checked_text(prompt, "prompt")}]
    if isinstance(prompt, Prompt):
        return _prompt_messages(prompt, spec, system_notes, reasoning=reasoning)
    if isinstance(prompt, Sequence) and not isinstance(prompt, (bytes, bytearray)):
        messages: list[Message] = []
        for index, message in enumerate(prompt):
            if not isinstance(message, Mapping):
                raise RequestError(f"expected a message dict, got {type(message).__name__}", f"prompt[{index}]")
            check_role(message.get("role"), f"prompt[{index}].role")
            if isinstance(message.get("content"), str):
                _checked_text(message["content"], f"prompt[{index}].content")
            messages.append(dict(message))
        if not messages:
            raise RequestError("is empty", "prompt")
        if messages[0].get("role") == "system":
            head = messages[0]
            head["content"] = "\n\n".join(part for part in (str(head.get("content") or ""), system_notes) if part)
            return messages
        return _system(system_notes) + messages
    raise RequestError(f"expected a str, a list of messages or an sdk.Prompt, got {type(prompt).__name__}", "prompt")


def explain_prompt_too_long(
    exc: PromptTooLongError, messages: Sequence[Mapping[str, str]], spec: OutputSpec
) -> PromptTooLongError | None:
    """`exc` with a hint saying how much of the prompt the output's description took, so the caller
    knows whether `describe_output=False` would make it fit; None when the description is not in it.

    The share is measured in characters and converted to tokens in proportion, since the backend
    counted only the whole prompt's tokens.
    """
    description = spec.describe()
    system = messages[0].get("content") if messages and messages[0].get("role") == "system" else None
    if not description or not isinstance(system, str) or description not in system:
        return None
    num_chars = sum(len(m["content"]) for m in messages if isinstance(m.get("content"), str))
    share = len(description) / num_chars
    hint = (
        f"The output's description took {len(description):,} of the prompt's {num_chars:,} characters "
        f"({share:.0%}, about {round(share * exc.num_prompt_tokens):,} tokens); describe_output=False leaves "
        "it out, and the constraint still enforces the output's form."
    )
    return PromptTooLongError(
        exc.num_prompt_tokens, exc.max_context_tokens, exc.field, is_lower_bound=exc.is_lower_bound, hint=hint
    )


def _prompt_messages(prompt: Prompt, spec: OutputSpec, system_notes: str, *, reasoning: bool) -> list[Message]:
    parts = [_checked_text(prompt.instructions or "", "prompt.instructions")]
    if prompt.constraints:
        rules = (_checked_text(str(rule), f"prompt.constraints[{i}]") for i, rule in enumerate(prompt.constraints))
        parts.append("Rules:\n" + "\n".join(f"- {rule}" for rule in rules))
    parts.append(system_notes)
    messages = _system("\n\n".join(part for part in parts if part))
    for index, example in enumerate(prompt.examples):
        field_name = f"prompt.examples[{index}]"
        if not isinstance(example, Example):
            raise RequestError(f"expected an sdk.Example, got {type(example).__name__}", field_name)
        answer = spec.render(example.output, f"{field_name}.output")
        if reasoning and example.reasoning:
            answer = reasoning_layout.join(example.reasoning, answer)
        messages.append({"role": "user", "content": _render_inputs(example.input, f"{field_name}.input")})
        messages.append({"role": "assistant", "content": answer})
    user = _render_inputs(prompt.inputs, "prompt.inputs")
    if prompt.context:
        user = f"Context:\n{_checked_text(str(prompt.context), 'prompt.context')}\n\n{user}"
    messages.append({"role": "user", "content": user})
    return messages


def _system(content: str) -> list[Message]:
    """A system message list, empty when there is nothing to say (the template's default applies)."""
    return [{"role": "system", "content": content}] if content else []


def _render_inputs(inputs: str | Mapping[str, Any], field_name: str) -> str:
    """A text as is; named fields as "name: value" lines."""
    if isinstance(inputs, str):
        if not inputs:
            raise RequestError("is empty", field_name)
        return _checked_text(inputs, field_name)
    if isinstance(inputs, Mapping):
        if not inputs:
            raise RequestError("is empty", field_name)
        return "\n".join(
            f"{name}: {_checked_text(str(value), f'{field_name}.{name}')}" for name, value in inputs.items()
        )
    raise RequestError(f"expected a str or a dict of named inputs, got {type(inputs).__name__}", field_name)


def _checked_text(text: str, field_name: str) -> str:
    """`text`, checked to be encodable: the tokenizer takes UTF-8, which has no lone surrogates.

    Raises:
        RequestError: `text` holds a lone surrogate (`field` names where; the message its offset).
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RequestError(
            f"holds a lone surrogate {text[exc.start]!r} at offset {exc.start}, which UTF-8 cannot encode", field_name
        ) from exc
    return text
