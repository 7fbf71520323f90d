"""Prompt building: strings, message lists and Prompt parts to chat messages."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

import grammars
import sdk
from runtime.errors import PromptTooLongError, RequestError
from sdk.backends import ScriptedBackend
from sdk.outputs import output_spec
from sdk.prompts import Example, Prompt, build_messages
from tests.runtime.fakes import smollm2_tokenizer
from tests.sdk.test_schema_text import tree_grammar


class Sentiment(BaseModel):
    label: str


def test_a_string_is_one_user_message_after_the_output_description() -> None:
    messages = build_messages("Great!", output_spec(Sentiment), reasoning=False, describe_output=True)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert '"label": string' in messages[0]["content"] and messages[1]["content"] == "Great!"


def test_without_description_free_text_gets_no_system_message() -> None:
    assert build_messages("hi", output_spec(None), reasoning=False, describe_output=True) == [
        {"role": "user", "content": "hi"}
    ]
    assert build_messages("hi", output_spec(Sentiment), reasoning=False, describe_output=False) == [
        {"role": "user", "content": "hi"}
    ]


def test_a_callers_system_message_is_kept_and_extended() -> None:
    messages = build_messages(
        [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Rate it."}],
        output_spec(grammars.Choice(["good", "bad"])),
        reasoning=True,
        describe_output=True,
    )
    system = messages[0]["content"]
    assert system.startswith("Be terse.\n\nRespond with exactly one of: good, bad.") and "Answer:" in system
    assert messages[1] == {"role": "user", "content": "Rate it."}


def test_prompt_parts_render_zero_and_few_shot() -> None:
    prompt = Prompt(
        instructions="Classify the review.",
        constraints=["Use the reviewer's own words"],
        context="Reviews of a bakery.",
        inputs={"review": "Stale bread.", "stars": 1},
        examples=[
            Example(input="Lovely croissants!", output=Sentiment(label="positive"), reasoning="Lovely is praise."),
            Example(input="Rude staff.", output={"label": "negative"}),
        ],
    )
    messages = build_messages(prompt, output_spec(Sentiment), reasoning=True, describe_output=True)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    system = messages[0]["content"]
    assert system.startswith("Classify the review.\n\nRules:\n- Use the reviewer's own words\n\nRespond with JSON")
    assert messages[2]["content"] == 'Lovely is praise.\nAnswer: {"label": "positive"}'
    assert messages[4]["content"] == '{"label": "negative"}'
    assert messages[5]["content"] == "Context:\nReviews of a bakery.\n\nreview: Stale bread.\nstars: 1"


def test_messages_render_through_the_models_chat_template() -> None:
    messages = build_messages(
        Prompt(inputs="Hi", instructions="Greet."), output_spec(None), reasoning=False, describe_output=True
    )
    text = smollm2_tokenizer().apply_chat_template(messages)
    assert text == "<|im_start|>system\nGreet.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize(
    ("prompt", "field"),
    [
        ("", "prompt"),
        ([], "prompt"),
        (42, "prompt"),
        (Prompt(inputs=""), "prompt.inputs"),
        (Prompt(inputs="x", examples=["not an example"]), "prompt.examples[0]"),  # type: ignore[list-item]
        (Prompt(inputs="x", examples=[Example(input="a", output={"label": 3})]), "prompt.examples[0].output"),
    ],
)
def test_bad_prompts_name_the_field(prompt: Any, field: str) -> None:
    with pytest.raises(RequestError) as info:
        build_messages(prompt, output_spec(Sentiment), reasoning=False, describe_output=True)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("prompt", "field"), [([{"role": "robot", "content": "hi"}], "prompt[0].role"), (["hi"], "prompt[0]")]
)
def test_messages_need_a_chat_role(prompt: list, field: str) -> None:
    with pytest.raises(RequestError) as info:
        build_messages(prompt, output_spec(str), reasoning=False, describe_output=False)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("prompt", "field"),
    [
        ("hi \ud800", "prompt"),
        ([{"role": "system", "content": "ok"}, {"role": "user", "content": "\udc00"}], "prompt[1].content"),
        (Prompt(inputs="x \ud800"), "prompt.inputs"),
        (Prompt(inputs={"review": "\ud83d"}), "prompt.inputs.review"),
        (Prompt(inputs="x", instructions="\ud800"), "prompt.instructions"),
        (Prompt(inputs="x", constraints=["fine", "\ud800"]), "prompt.constraints[1]"),
        (Prompt(inputs="x", context="\ud800"), "prompt.context"),
        (Prompt(inputs="x", examples=[Example(input="\ud800", output={"label": "a"})]), "prompt.examples[0].input"),
    ],
)
def test_a_lone_surrogate_is_a_request_error_naming_the_field(prompt: Any, field: str) -> None:
    with pytest.raises(RequestError, match="lone surrogate") as info:
        build_messages(prompt, output_spec(Sentiment), reasoning=False, describe_output=False)
    assert info.value.field == field


async def test_a_lone_surrogate_prompt_fails_before_the_backend_runs() -> None:
    calls: list[object] = []

    def reply(request: object) -> str:
        calls.append(request)
        return "unused"

    backend = ScriptedBackend(reply)
    with pytest.raises(RequestError) as info:
        await sdk.LLM(backend=backend).run("hi \ud800")
    assert info.value.field == "prompt" and not calls


def test_a_large_grammars_prompt_fits_the_context_window() -> None:
    text = tree_grammar(600)
    tokenizer = smollm2_tokenizer()
    context_window = 8_192  # SmolLM2-135M-Instruct's
    assert len(tokenizer.encode(text)) > context_window  # pasted whole, the grammar alone would not fit
    messages = build_messages("Write one.", output_spec(grammars.Lark(text)), reasoning=False, describe_output=True)
    prompt_ids = tokenizer.apply_chat_template(messages, tokenize=True, context_window=context_window)
    assert len(prompt_ids) < context_window // 4  # with the rest left to generate in


@pytest.mark.parametrize("streams", [False, True])
async def test_a_prompt_too_long_says_what_the_output_description_took(llm: sdk.LLM, streams: bool) -> None:
    names = [f"field_{i}" for i in range(500)]
    schema = {"type": "object", "properties": {name: {"type": "integer"} for name in names}, "required": names}
    description = output_spec(schema).describe()
    assert description is not None
    prompt = "word " * 600
    with pytest.raises(sdk.PromptTooLongError) as info:
        if streams:
            async for _ in llm.stream(prompt, output=schema):
                pass
        else:
            await llm.generate(prompt, output=schema)
    error = info.value
    share = len(description) / (len(description) + len(prompt))
    assert error.hint == (
        f"The output's description took {len(description):,} of the prompt's {len(description) + len(prompt):,} "
        f"characters ({share:.0%}, about {round(share * error.num_prompt_tokens):,} tokens); describe_output=False "
        "leaves it out, and the constraint still enforces the output's form."
    )
    assert (
        str(error).endswith(error.hint) and error.field == "prompt" and isinstance(error.__cause__, PromptTooLongError)
    )


async def test_a_prompt_too_long_without_a_description_has_no_hint(llm: sdk.LLM) -> None:
    with pytest.raises(sdk.PromptTooLongError) as info:
        await llm.generate("word " * 600, output=grammars.Choice(["a", "b"]), describe_output=False)
    assert info.value.hint is None and "describe_output" not in str(info.value)
