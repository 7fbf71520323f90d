"""Prompt building: strings, message lists and Prompt parts to chat messages."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

import grammars
from runtime.errors import RequestError
from sdk.outputs import output_spec
from sdk.prompts import Example, Prompt, build_messages
from tests.runtime.fakes import smollm2_tokenizer


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
        (Prompt(inputs="x", examples=["not an example"]), "prompt.examples[0]"),
        (Prompt(inputs="x", examples=[Example(input="a", output={"label": 3})]), "prompt.examples[0].output"),
    ],
)
def test_bad_prompts_name_the_field(prompt: object, field: str) -> None:
    with pytest.raises(RequestError) as info:
        build_messages(prompt, output_spec(Sentiment), reasoning=False, describe_output=True)
    assert info.value.field == field
