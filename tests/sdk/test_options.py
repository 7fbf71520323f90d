"""Call preparation: defaults that suit typed output, and controls that conflict."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

import grammars
from runtime.errors import RequestError
from sdk.options import prepare_call


class Pick(BaseModel):
    choice: str


def prepare(**overrides: Any):
    arguments: dict[str, Any] = dict(
        prompt="p",
        output=Pick,
        reasoning=False,
        max_reasoning_tokens=None,
        samples=1,
        vote_on=None,
        retries=0,
        describe_output=True,
        max_tokens=64,
        temperature=None,
        top_k=None,
        top_p=1.0,
        min_p=0.0,
        seed=None,
        stop=None,
        repetition_penalty=1.0,
        presence_penalty=0.0,
        frequency_penalty=0.0,
        num_beams=1,
        length_penalty=1.0,
    )
    arguments.update(overrides)
    return prepare_call(**arguments)


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
    ],
)
def test_conflicting_or_bad_controls_name_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(RequestError) as info:
        prepare(**overrides)
    assert info.value.field == field
