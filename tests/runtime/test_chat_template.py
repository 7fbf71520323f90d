"""Chat templates: SmolLM2's template against transformers' apply_chat_template, the ChatML fallback,
message validation, and the sandbox."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runtime.chat_template import CHATML_TEMPLATE, ChatTemplate, validate_messages
from runtime.errors import ChatTemplateError, RequestError
from runtime.loading import load_checkpoint
from runtime.tokenizer import Tokenizer

REFERENCE_TOKENIZER = Path(__file__).resolve().parents[3] / "shared" / "bench" / "smollm2-135m-instruct.tokenizer.json"

CONVERSATIONS: list[list[dict[str, Any]]] = [
    [{"role": "user", "content": "What is 2+2?"}],
    [{"role": "system", "content": "Answer in JSON."}, {"role": "user", "content": "Name a colour."}],
    [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "  Unicode: 日本語 😀\n\ttabs  "},
    ],
]


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return load_checkpoint(None).tokenizer


@pytest.fixture(scope="module")
def hf_tokenizer(tokenizer: Tokenizer) -> Any:
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_file=str(REFERENCE_TOKENIZER),
        chat_template=tokenizer.chat_template,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
    )


@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_smollm2_template_matches_transformers(
    tokenizer: Tokenizer, hf_tokenizer: Any, messages: list[dict[str, Any]], add_generation_prompt: bool
) -> None:
    expected = hf_tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=False)
    assert tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt) == expected
    expected_ids = hf_tokenizer.encode(expected, add_special_tokens=False)
    assert (
        tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True)
        == expected_ids
    )


def test_smollm2_template_hand_checked(tokenizer: Tokenizer) -> None:
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}])
    assert text == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=True)
    assert ids[0] == 1 and ids.count(2) == 2  # <|im_start|> and <|im_end|> are single special tokens


def test_chatml_fallback_when_model_has_no_template(tokenizer: Tokenizer) -> None:
    bare = Tokenizer(tokenizer.backend, eos_token_ids=(2,), bos_token_id=1, chat_template=None)
    text = bare.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    assert text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert (
        ChatTemplate(CHATML_TEMPLATE, special_tokens={}).render(
            [{"role": "user", "content": "x"}], add_generation_prompt=False
        )
        == "<|im_start|>user\nx<|im_end|>\n"
    )


def test_hf_environment_features(hf_tokenizer: Any) -> None:
    """tojson keeps non-ASCII, loop controls, the generation block, trim/lstrip blocks, extra variables."""
    source = (
        "{% for m in messages %}\n"
        "  {% if loop.index > 2 %}{% break %}{% endif %}\n"
        "  {{ bos_token }}{{ m['role'] }}: {% generation %}{{ m['content'] }}{% endgeneration %}\n"
        "{% endfor %}\n"
        "{% if tools %}{{ tools | tojson }}{% endif %}{{ eos_token }}"
    )
    messages = [
        {"role": "user", "content": "é<b>"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "dropped"},
    ]
    tools = [{"name": "f", "description": "ünïcode & <tags>"}]
    ours = ChatTemplate(source, special_tokens={"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"}).render(
        messages, tools=tools
    )
    hf_tokenizer.chat_template = source
    assert ours == hf_tokenizer.apply_chat_template(messages, tools=tools, tokenize=False)
    assert '"ünïcode & <tags>"' in ours and "dropped" not in ours


def test_broken_templates_raise_chat_template_error() -> None:
    with pytest.raises(ChatTemplateError, match="does not compile"):
        ChatTemplate("{% for m in messages %}", special_tokens={}).render([])
    with pytest.raises(ChatTemplateError, match="failed while rendering"):
        ChatTemplate("{{ messages[0]['content'] + 1 }}", special_tokens={}).render([{"role": "user", "content": "x"}])


def test_sandbox_blocks_escapes_and_mutation() -> None:
    with pytest.raises(ChatTemplateError):
        ChatTemplate("{{ ''.__class__.__mro__[1].__subclasses__() }}", special_tokens={}).render([])
    with pytest.raises(ChatTemplateError):
        ChatTemplate("{{ messages.append(1) }}", special_tokens={}).render([])


def test_template_rejection_is_a_request_error() -> None:
    source = (
        "{% if messages[0]['role'] != 'user' %}"
        "{{ raise_exception('Conversation must start with a user turn') }}"
        "{% endif %}ok"
    )
    template = ChatTemplate(source, special_tokens={})
    assert template.render([{"role": "user", "content": "x"}]) == "ok"
    with pytest.raises(RequestError, match="must start with a user turn") as excinfo:
        template.render([{"role": "assistant", "content": "x"}])
    assert excinfo.value.field == "messages"


@pytest.mark.parametrize(
    ("messages", "field"),
    [
        ("hello", "messages"),
        ([["user", "hi"]], "messages[0]"),
        ([{"role": "user", "content": "a"}, {"content": "b"}], "messages[1].role"),
        ([{"role": "", "content": "a"}], "messages[0].role"),
        ([{"role": "user"}], "messages[0].content"),
        ([{"role": "user", "content": 3}], "messages[0].content"),
        ([{"role": "user", "content": None}], "messages[0].content"),
        ([{"role": "user", "content": [{"type": "text", "text": "a"}]}], "messages[0].content"),
        ([{"role": "user", "content": "a", "contnet": "typo"}], "messages[0].contnet"),
        ([{"role": "assistant", "content": None, "tool_calls": "f()"}], "messages[0].tool_calls"),
        ([{"role": "tool", "content": "1", "tool_call_id": 7}], "messages[0].tool_call_id"),
    ],
)
def test_malformed_messages_name_the_field(messages: Any, field: str) -> None:
    with pytest.raises(RequestError) as excinfo:
        validate_messages(messages)
    assert excinfo.value.field == field


def test_valid_messages_are_copied() -> None:
    messages = [
        {"role": "assistant", "content": None, "tool_calls": [{"name": "f"}]},
        {"role": "tool", "content": "1", "tool_call_id": "c1"},
    ]
    checked = validate_messages(messages)
    assert checked == messages and checked[0] is not messages[0]
