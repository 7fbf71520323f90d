"""Choices ranked by likelihood: a closed set of answers scored whole instead of generated.

For an output that is one of a few texts (a Literal or str Enum written as bare labels, a
`grammars.Choice`, a bool written as `true` / `false`), the backend scores every option's full token
sequence, end of sequence included, in one batch; greedy calls take the most likely option, calls
with `temperature > 0` draw one from softmax(logprobs / temperature) with the call's `seed`. This
is what evaluation harnesses do, and it removes the prefix bias of token-by-token decoding (a label
whose first token is likely wins even when the rest of it is not).

Only calls that token-by-token decoding would answer the same way take this path: no reasoning,
one sample, no beams, and no per-token controls (top_k, top_p, min_p, penalties); the others, and
backends that cannot score, generate as before.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import grammars
from runtime.engine.outputs import Usage
from runtime.engine.sampling_params import SamplingParams
from sdk.backends.base import Backend
from sdk.options import Call
from sdk.outputs import OutputSpec

__all__ = ["ChoiceAnswer", "choice_texts", "pick", "score_choices"]

#: The texts a bool output is written as (JSON).
_BOOL_TEXTS = ("true", "false")


@dataclass(frozen=True)
class ChoiceAnswer:
    """The option a scored call picked.

    Attributes:
        text: the picked option's text (what the model would have written).
        logprobs: every option's log-probability, by text, in the output's order.
        usage: the tokens the backend read and scored.
    """

    text: str
    logprobs: dict[str, float]
    usage: Usage


def choice_texts(call: Call) -> tuple[str, ...] | None:
    """The option texts of a call that is answered by scoring, else None (it generates)."""
    if call.reasoning or not _is_plain(call.params):
        return None
    texts = _option_texts(call.spec)
    return tuple(dict.fromkeys(texts)) if texts else None


def _option_texts(spec: OutputSpec) -> tuple[str, ...] | None:
    if spec.labels is not None:
        return spec.labels
    if isinstance(spec.output, grammars.Choice):
        return spec.output.options
    return _BOOL_TEXTS if spec.output is bool else None


def _is_plain(params: SamplingParams) -> bool:
    """Whether the sampling is a plain greedy or temperature draw of one completion, which is
    what ranking whole options reproduces without bias."""
    return (
        params.n == 1
        and not params.use_beam_search
        and params.top_k is None
        and params.top_p == 1.0
        and params.min_p == 0.0
        and params.repetition_penalty == 1.0
        and params.presence_penalty == 0.0
        and params.frequency_penalty == 0.0
    )


def pick(logprobs: Sequence[float], temperature: float, seed: int | None) -> int:
    """Index of the chosen option: the most likely (the first of ties) at temperature 0, else a
    draw from softmax(logprobs / temperature), reproducible with `seed`."""
    if temperature == 0.0:
        return max(range(len(logprobs)), key=logprobs.__getitem__)
    top = max(logprobs)
    if top == -math.inf:  # every option impossible: no distribution to draw from
        return 0
    weights = [math.exp((logprob - top) / temperature) for logprob in logprobs]
    return random.Random(seed).choices(range(len(logprobs)), weights=weights)[0]


async def score_choices(backend: Backend, call: Call, texts: tuple[str, ...]) -> ChoiceAnswer | None:
    """Score `texts` as the reply to the call's messages and pick one; None when the backend cannot
    score.

    Raises:
        The errors of `Backend.score`.
    """
    scores = await backend.score(call.messages, texts)
    if scores is None:
        return None
    index = pick(scores.logprobs, call.params.temperature, call.params.seed)
    return ChoiceAnswer(texts[index], dict(zip(texts, scores.logprobs)), scores.usage)
