"""Self-consistency voting: canonical forms, keys, ties."""

from __future__ import annotations

from pydantic import BaseModel

from sdk.voting import canonical_json, tally


class Pair(BaseModel):
    a: int
    b: str


def test_equal_values_in_different_spellings_are_one_vote() -> None:
    assert canonical_json({"b": "x", "a": 1}) == canonical_json(Pair(a=1, b="x")) == '{"a":1,"b":"x"}'


def test_most_votes_win_and_ties_go_to_who_got_there_first() -> None:
    votes = tally([(0, "x"), (1, "y"), (2, "y"), (4, "x")], num_samples=5)
    assert votes.winner.key == '"y"' and votes.winner.sample_index == 1
    assert votes.counts == {'"y"': 2, '"x"': 2}
    assert votes.num_invalid == 1 and votes.agreement == 0.4


def test_votes_on_a_field_or_a_function() -> None:
    values = [(0, Pair(a=1, b="p")), (1, Pair(a=2, b="q")), (2, Pair(a=2, b="r"))]
    by_a = tally(values, num_samples=3, key="a")
    assert by_a.winner.key == "2" and by_a.winner.value == Pair(a=2, b="q") and by_a.winner.count == 2
    by_parity = tally(values, num_samples=3, key=lambda pair: pair.a % 2)
    assert by_parity.counts == {"0": 2, "1": 1}
    assert tally([(0, {"a": 5})], num_samples=1, key="a").winner.key == "5"
