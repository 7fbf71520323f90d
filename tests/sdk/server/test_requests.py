"""Request bodies: strict types with field paths, unknown fields warned about, sampling parameters."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from sdk.options import DEFAULT_SAMPLES_TEMPERATURE
from sdk.server.errors import APIError
from sdk.server.requests import (
    ChatCompletionRequest,
    CompletionRequest,
    chat_max_tokens,
    chat_num_logprobs,
    parse_body,
    sampling_params,
)

MESSAGES = [{"role": "user", "content": "hi"}]


def chat(**fields: Any) -> ChatCompletionRequest:
    return parse_body(ChatCompletionRequest, {"model": "m", "messages": MESSAGES, **fields})


def params(request: ChatCompletionRequest, *, is_constrained: bool = False) -> Any:
    return sampling_params(
        request,
        max_tokens=chat_max_tokens(request),
        default_max_tokens=100,
        logprobs=chat_num_logprobs(request),
        is_constrained=is_constrained,
    )


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": MESSAGES}, "model"),
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": MESSAGES, "temperature": "0.5"}, "temperature"),
        ({"model": "m", "messages": MESSAGES, "n": 1.5}, "n"),
        ({"model": "m", "messages": ["hi"]}, "messages[0]"),
        (
            {"model": "m", "messages": MESSAGES, "stream_options": {"include_usage": "yes"}},
            "stream_options.include_usage",
        ),
        ({"model": "m", "messages": MESSAGES, "stop": [1]}, "stop"),
    ],
)
def test_wrong_types_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(APIError) as caught:
        parse_body(ChatCompletionRequest, body)
    assert (caught.value.status, caught.value.param) == (400, param)


def test_a_body_that_is_not_an_object() -> None:
    with pytest.raises(APIError) as caught:
        parse_body(CompletionRequest, [1, 2])
    assert caught.value.status == 400


def test_unknown_fields_are_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="stencil.server"):
        request = chat(frobnicate=1, metadata={"a": "b"})
    assert request.model == "m"
    assert "frobnicate" in caplog.text and "metadata" in caplog.text


def test_greedy_unless_a_temperature_is_given() -> None:
    assert params(chat()).temperature == 0.0
    assert params(chat(temperature=0.8)).temperature == 0.8
    assert params(chat(n=3)).temperature == DEFAULT_SAMPLES_TEMPERATURE
    assert params(chat(n=3, temperature=0.0)).temperature == 0.0


def test_sampling_fields_reach_the_engine() -> None:
    sampling = params(
        chat(
            max_completion_tokens=7,
            top_p=0.9,
            top_k=5,
            min_p=0.1,
            seed=3,
            stop="END",
            presence_penalty=0.5,
            frequency_penalty=0.25,
            repetition_penalty=1.1,
            logprobs=True,
            top_logprobs=4,
        )
    )
    assert (sampling.max_tokens, sampling.top_p, sampling.top_k, sampling.min_p, sampling.seed) == (7, 0.9, 5, 0.1, 3)
    assert sampling.stop == ("END",)
    assert (sampling.presence_penalty, sampling.frequency_penalty, sampling.repetition_penalty) == (0.5, 0.25, 1.1)
    assert sampling.logprobs == 4
    assert params(chat()).max_tokens == 100  # the default: what the context window leaves
    assert params(chat(top_k=-1)).top_k is None  # vLLM's "off"
    assert params(chat(logprobs=True)).logprobs == 0


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"top_p": 0.0}, "top_p"),
        ({"temperature": -1.0}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"presence_penalty": 3.0}, "presence_penalty"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": 50}, "logprobs"),
        ({"max_tokens": 5, "max_completion_tokens": 6}, "max_tokens"),
        ({"n": 0}, "n"),
    ],
)
def test_out_of_range_controls_name_the_field(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(APIError) as caught:
        params(chat(**fields))
    assert (caught.value.status, caught.value.param) == (400, param)


def test_a_stop_string_cannot_cut_a_constrained_output() -> None:
    with pytest.raises(APIError) as caught:
        params(chat(stop=["}"]), is_constrained=True)
    assert caught.value.param == "stop"
