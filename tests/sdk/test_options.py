"""Call preparation: options declared once with their defaults, and controls that conflict."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from pydantic import BaseModel
from typing_extensions import TypedDict

import grammars
from runtime.errors import RequestError
from sdk import options
from sdk.options import (
    CALL_OPTIONS,
    OPTION_DEFAULTS,
    STREAM_OPTIONS,
    Call,
    CallOptions,
    Default,
    StreamOptions,
    prepare_call,
)


class Pick(BaseModel):
    choice: str


def prepare(**overrides: Any) -> Call:
    output = overrides.pop("output", Pick)
    return prepare_call("p", output, {"max_tokens": 64, **overrides})


def test_greedy_by_default_and_warm_for_self_consistency() -> None:
    assert prepare().params.temperature == 0.0
    call = prepare(samples=4)
    assert call.params.temperature == 0.7 and call.params.n == 4 and call.num_samples == 4
    assert prepare(temperature=1.5, seed=3).params.seed == 3


def test_reasoning_swaps_in_the_budgeted_composed_constraint() -> None:
    plain, reasoned = prepare(), prepare(reasoning=True)
    assert reasoned.constraint is not plain.constraint
    assert reasoned.constraint.accepts('ok\nAnswer: {"choice": "a"}')
    assert reasoned.constraint.max_reasoning_tokens == 32
    assert prepare(reasoning=True, max_reasoning_tokens=10).constraint.max_reasoning_tokens == 10


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (dict(samples=3, num_beams=2), "num_beams"),
        (dict(samples=3, temperature=0.0), "temperature"),
        (dict(vote_on="choice"), "vote_on"),
        (dict(samples=2, vote_on="nope"), "vote_on"),
        (dict(output=grammars.Choice(["a"]), retries=1), "retries"),
        (dict(stop=["}"]), "stop"),
        (dict(output=None, reasoning=True, stop=["."]), "stop"),
        (dict(samples=0), "samples"),
        (dict(retries=-1), "retries"),
        (dict(reasoning="yes"), "reasoning"),
        (dict(describe_output=None), "describe_output"),
        (dict(temperature=-0.5), "temperature"),
        (dict(top_p=0.0), "top_p"),
        (dict(max_tokens=0), "max_tokens"),
        (dict(num_beams=2, seed=1), "seed"),
        (dict(length_penalty=0.5), "length_penalty"),
        (dict(max_reasoning_tokens=8), "max_reasoning_tokens"),
        (dict(reasoning=True, max_reasoning_tokens=64), "max_reasoning_tokens"),
        (dict(reasoning=True, max_reasoning_tokens=0), "max_reasoning_tokens"),
        (dict(stop=5, output=None), "stop"),
    ],
)
def test_conflicting_or_bad_controls_name_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(RequestError) as info:
        prepare(**overrides)
    assert info.value.field == field


def test_left_out_options_take_their_declared_defaults() -> None:
    call = prepare_call("p", None, {})
    assert call.params.max_tokens == OPTION_DEFAULTS["max_tokens"] == 512
    assert (call.params.temperature, call.params.top_p, call.params.n, call.params.num_beams) == (0.0, 1.0, 1, 1)
    assert (call.reasoning, call.vote_on, call.retries, call.params.stop) == (False, None, 0, ())


def test_the_declarations_are_the_option_sets() -> None:
    assert set(OPTION_DEFAULTS) == CALL_OPTIONS == set(CallOptions.__optional_keys__)
    assert STREAM_OPTIONS == set(StreamOptions.__optional_keys__)
    assert CALL_OPTIONS - STREAM_OPTIONS == {"samples", "vote_on", "retries"}


def test_prepare_call_reads_every_declared_option_and_nothing_else(monkeypatch: pytest.MonkeyPatch) -> None:
    read: set[str] = set()

    class Recording(dict[str, object]):
        def __getitem__(self, name: str) -> object:
            read.add(name)
            return super().__getitem__(name)

    resolve = options.resolve_options
    monkeypatch.setattr(options, "resolve_options", lambda given, accepted: Recording(resolve(given, accepted)))
    prepare()
    assert read == CALL_OPTIONS


@pytest.mark.parametrize(
    ("given", "accepted", "field", "hint"),
    [
        ({"max_token": 8}, CALL_OPTIONS, "max_token", "did you mean 'max_tokens'?"),
        ({"bogus": 1}, CALL_OPTIONS, "bogus", "not a keyword argument"),
        ({"samples": 2}, STREAM_OPTIONS, "samples", "do not stream"),
    ],
)
def test_unknown_keywords_are_request_errors_naming_them(
    given: dict[str, object], accepted: frozenset[str], field: str, hint: str
) -> None:
    with pytest.raises(RequestError) as info:
        prepare_call("p", None, given, accepted=accepted)
    assert info.value.field == field and hint in str(info.value)


def test_an_option_without_a_default_is_a_declaration_error() -> None:
    class Broken(TypedDict, total=False):
        fine: Annotated[int, Default(1)]
        missing: int

    with pytest.raises(TypeError, match="missing"):
        options._declared_defaults(Broken)
