"""A call's arguments, checked and resolved before anything is generated.

`prepare_call` is the one place where `generate`, `run` and `stream` turn keyword arguments into a
`Call`: the output resolved and compiled, the sampling parameters validated (by
`runtime.SamplingParams`, which names the offending field), the controls checked against each other,
and the prompt rendered into chat messages. Every problem found here is a typed error raised before
the backend sees the request; only the prompt's length is left to the backend, which owns the
tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from runtime.engine.constraints import Constraint as RuntimeConstraint
from runtime.engine.sampling import SamplingParams
from runtime.errors import RequestError
from sdk import reasoning as reasoning_layout
from sdk.outputs import OutputKind, OutputSpec, output_spec
from sdk.prompts import Message, PromptInput, build_messages
from sdk.voting import VoteKey

__all__ = ["DEFAULT_MAX_TOKENS", "DEFAULT_SAMPLES_TEMPERATURE", "Call", "call_arguments", "prepare_call"]

#: Default completion budget: room for a typed object with some reasoning in front of it.
DEFAULT_MAX_TOKENS = 512
#: Temperature of `samples > 1` when none is given: self-consistency needs paths that differ.
DEFAULT_SAMPLES_TEMPERATURE = 0.7


@dataclass(frozen=True)
class Call:
    """A validated call, ready for a backend.

    Attributes:
        messages: the chat messages to render.
        spec: the resolved output.
        constraint: what the completion must follow (the output's, or reasoning + the output's).
        params: sampling parameters (`n` = samples).
        reasoning: whether the completion is reasoning, marker, answer.
        vote_on: what self-consistency votes on.
        retries: attempts left for validation errors.
    """

    messages: list[Message]
    spec: OutputSpec
    constraint: RuntimeConstraint | None
    params: SamplingParams
    reasoning: bool
    vote_on: VoteKey
    retries: int

    @property
    def num_samples(self) -> int:
        return self.params.n


def prepare_call(
    prompt: PromptInput,
    *,
    output: Any,
    reasoning: bool,
    max_reasoning_tokens: int | None,
    samples: int,
    vote_on: VoteKey,
    retries: int,
    describe_output: bool,
    max_tokens: int,
    temperature: float | None,
    top_k: int | None,
    top_p: float,
    min_p: float,
    seed: int | None,
    stop: str | Sequence[str] | None,
    repetition_penalty: float,
    presence_penalty: float,
    frequency_penalty: float,
    num_beams: int,
    length_penalty: float,
) -> Call:
    """Check and resolve a call's arguments (see `sdk.LLM.run` for their meaning).

    Raises:
        RequestError: a control of the wrong type or out of range, or controls that conflict
            (`field` names the one to change).
        UnsupportedOutputTypeError, grammars.GrammarError: the output cannot be constrained.
    """
    _check_flag(reasoning, "reasoning")
    _check_flag(describe_output, "describe_output")
    _check_count(samples, "samples", minimum=1)
    _check_count(retries, "retries", minimum=0)
    spec = output_spec(output)
    _check_conflicts(
        spec,
        samples=samples,
        vote_on=vote_on,
        retries=retries,
        temperature=temperature,
        stop=stop,
        num_beams=num_beams,
        reasoning=reasoning,
    )
    if temperature is None:
        temperature = DEFAULT_SAMPLES_TEMPERATURE if samples > 1 else 0.0
    params = SamplingParams(
        max_tokens=max_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
        seed=seed,
        stop=() if stop is None else stop,
        repetition_penalty=repetition_penalty,
        presence_penalty=presence_penalty,
        frequency_penalty=frequency_penalty,
        n=samples,
        num_beams=num_beams,
        length_penalty=length_penalty,
    )
    constraint = _constraint(spec, reasoning, max_reasoning_tokens, max_tokens)
    messages = build_messages(prompt, spec, reasoning=reasoning, describe_output=describe_output)
    return Call(messages, spec, constraint, params, reasoning, vote_on, retries)


def call_arguments(frame_locals: dict[str, Any]) -> dict[str, Any]:
    """A client method's arguments (its `locals()` on entry) without `self`, to forward unchanged:
    the methods of `LLM` and `SyncLLM` share one parameter list, kept equal by a signature test."""
    return {name: value for name, value in frame_locals.items() if name != "self"}


def _constraint(
    spec: OutputSpec, reasoning: bool, max_reasoning_tokens: int | None, max_tokens: int
) -> RuntimeConstraint | None:
    """The output's constraint, or with reasoning, the budgeted reasoning-then-answer one."""
    if not reasoning:
        if max_reasoning_tokens is not None:
            raise RequestError("only applies with reasoning=True", "max_reasoning_tokens")
        return spec.constraint
    if max_reasoning_tokens is None:
        max_reasoning_tokens = max(1, max_tokens // 2)
    _check_count(max_reasoning_tokens, "max_reasoning_tokens", minimum=1)
    if max_reasoning_tokens >= max_tokens:
        raise RequestError(
            f"must be below max_tokens={max_tokens}, to leave room for the answer", "max_reasoning_tokens"
        )
    return reasoning_layout.BudgetedReasoning(spec, max_reasoning_tokens)


def _check_conflicts(
    spec: OutputSpec,
    *,
    samples: int,
    vote_on: VoteKey,
    retries: int,
    temperature: float | None,
    stop: str | Sequence[str] | None,
    num_beams: int,
    reasoning: bool,
) -> None:
    """Controls that are each valid but do not combine."""
    if samples > 1 and num_beams != 1:
        raise RequestError("beam search and self-consistency sampling do not combine; use one", "num_beams")
    if samples > 1 and temperature == 0.0:
        raise RequestError("samples > 1 at temperature 0 would draw the same answer every time", "temperature")
    if vote_on is not None:
        if samples == 1:
            raise RequestError("only applies to self-consistency (samples > 1)", "vote_on")
        spec.check_vote_key(vote_on)
    if retries and not spec.is_validated:
        raise RequestError(
            "only validated outputs (Python types and Pydantic models) can fail validation and be retried",
            "retries",
        )
    if stop and spec.kind is not OutputKind.TEXT:
        raise RequestError("a stop string would cut a constrained output; the constraint ends it", "stop")
    if stop and reasoning:
        raise RequestError("a stop string would also end the reasoning, before any answer", "stop")


def _check_flag(value: object, field: str) -> None:
    if not isinstance(value, bool):
        raise RequestError(f"must be a bool, got {value!r}", field)


def _check_count(value: object, field: str, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise RequestError(f"must be an int >= {minimum}, got {value!r}", field)
