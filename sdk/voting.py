"""Self-consistency: many sampled answers, one vote on their canonical forms.

Two answers are the same vote when their canonical forms are equal: the JSON of the value with
sorted keys and no insignificant whitespace, so `{"a": 1, "b": 2}` and `{"b":2,"a":1}` agree (or the
canonical JSON of a key the caller picks, e.g. one field). Ties go to the candidate that reached its
count first in sample order, so a seeded call always returns the same winner.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import pydantic
from pydantic_core import to_jsonable_python

from runtime.errors import RequestError

if TYPE_CHECKING:
    from sdk.outputs import OutputSpec

__all__ = ["Vote", "VoteKey", "Votes", "canonical_json", "check_vote_key", "tally"]

T = TypeVar("T")

#: What a vote counts: None (the whole value), a field name, or a function of the value.
VoteKey = str | Callable[[Any], Hashable] | None


@dataclass(frozen=True)
class Vote(Generic[T]):
    """One distinct answer among the samples.

    Attributes:
        key: the canonical form that was voted on.
        value: the value of the first sample with this key.
        count: how many samples gave it.
        sample_index: index of that first sample.
    """

    key: str
    value: T
    count: int
    sample_index: int


@dataclass(frozen=True)
class Votes(Generic[T]):
    """The vote distribution of a self-consistency call.

    Attributes:
        candidates: the distinct answers, most votes first (ties: earliest sample first).
        num_samples: samples drawn.
        num_invalid: samples that gave no value (cut short, or rejected by validation).
    """

    candidates: tuple[Vote[T], ...]
    num_samples: int
    num_invalid: int

    @property
    def winner(self) -> Vote[T]:
        """The answer with the most votes."""
        return self.candidates[0]

    @property
    def counts(self) -> dict[str, int]:
        """Votes per canonical key, most first."""
        return {vote.key: vote.count for vote in self.candidates}

    @property
    def agreement(self) -> float:
        """The winner's share of all samples (invalid ones included): 1.0 when every sample agrees."""
        return self.winner.count / self.num_samples


def canonical_json(value: object) -> str:
    """The canonical form of a value: compact JSON with sorted keys (models become their fields)."""
    return json.dumps(to_jsonable_python(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def check_vote_key(spec: OutputSpec, key: object) -> None:
    """Check, before generating, that a `vote_on=` field name exists in the output.

    Args:
        spec: the resolved output.
        key: what `vote_on=` was given.

    Raises:
        RequestError: the output has no such field, or `key` is neither a name nor callable.
    """
    if key is None or callable(key):
        return
    if not isinstance(key, str):
        raise RequestError(f"expected a field name or a function, got {type(key).__name__}", "vote_on")
    fields = _top_level_fields(spec)
    if key not in fields:
        known = ", ".join(sorted(fields)) or "none: the output is not an object"
        raise RequestError(f"the output has no field {key!r} (fields: {known})", "vote_on")


def _top_level_fields(spec: OutputSpec) -> set[str]:
    """The names `vote_key` can read: a model's fields, else the schema's top-level properties."""
    output = spec.output
    if isinstance(output, type) and issubclass(output, pydantic.BaseModel):
        return set(output.model_fields)
    schema = spec.json_schema or {}
    return set(schema.get("properties") or ())


def vote_key(value: object, key: VoteKey) -> str:
    """The canonical form of the part of `value` a vote counts.

    Args:
        value: a parsed answer.
        key: None (the whole value), a field or dict key name, or a function of the value.
    """
    if key is None:
        return canonical_json(value)
    if callable(key):
        return canonical_json(key(value))
    if isinstance(value, dict):
        return canonical_json(value.get(key))
    return canonical_json(getattr(value, key, None))


def tally(values: Sequence[tuple[int, T]], num_samples: int, key: VoteKey = None) -> Votes[T]:
    """Count the votes of the valid samples.

    Args:
        values: (sample index, parsed value) of each sample that gave a value, in sample order.
        num_samples: all samples drawn, valid or not.
        key: what to vote on (see `vote_key`).

    Returns:
        The distribution; `candidates` is empty when no sample gave a value.
    """
    counts: dict[str, int] = {}
    first: dict[str, tuple[int, T]] = {}
    reached: dict[tuple[str, int], int] = {}
    for order, (index, value) in enumerate(values):
        canonical = vote_key(value, key)
        counts[canonical] = counts.get(canonical, 0) + 1
        first.setdefault(canonical, (index, value))
        reached[(canonical, counts[canonical])] = order
    ranked = sorted(counts, key=lambda k: (-counts[k], reached[(k, counts[k])]))
    candidates = tuple(Vote(key=k, value=first[k][1], count=counts[k], sample_index=first[k][0]) for k in ranked)
    return Votes(candidates=candidates, num_samples=num_samples, num_invalid=num_samples - len(values))
