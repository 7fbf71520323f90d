"""A call's options, declared once, and their checking and resolution before anything is generated.

`StreamOptions` and `CallOptions` declare the keyword arguments of `LLM.stream` and of
`LLM.generate` / `LLM.run`, each with its type and its `Default`. The clients take them as
`**options: Unpack[CallOptions]`, so editors and type checkers see every keyword, and the sync facade
maps onto the same declaration instead of repeating it.

`prepare_call` is the one place where those options become a `Call`: unknown keywords rejected,
defaults filled in from the declaration, the output resolved and compiled, the sampling parameters
validated (by `runtime.SamplingParams`, which names the offending field), the controls checked
against each other, and the prompt rendered into chat messages. Every problem found here is a typed
error raised before the backend sees the request; only the prompt's length is left to the backend,
which owns the tokenizer.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated, Any, cast, get_type_hints

from typing_extensions import TypedDict

from runtime.engine.constraints import Constraint as RuntimeConstraint
from runtime.engine.sampling_params import SamplingParams
from runtime.errors import RequestError
from sdk import reasoning as reasoning_layout
from sdk.outputs import OutputKind, OutputSpec, output_spec
from sdk.prompts import Message, PromptInput, build_messages
from sdk.tools.definitions import ToolLike
from sdk.tools.format import ToolFormat
from sdk.tools.requests import ToolRequest, prepare_tools
from sdk.voting import VoteKey

if TYPE_CHECKING:
    from runtime.engine.llm_engine import Engine

__all__ = [
    "CALL_OPTIONS",
    "DEFAULT_SAMPLES_TEMPERATURE",
    "OPTION_DEFAULTS",
    "STREAM_OPTIONS",
    "Call",
    "CallOptions",
    "Default",
    "Speculative",
    "SpeculativeOption",
    "StreamOptions",
    "prepare_call",
    "resolve_options",
    "speculative_config",
]

#: Temperature of `samples > 1` when none is given: self-consistency needs paths that differ.
DEFAULT_SAMPLES_TEMPERATURE = 0.7


@dataclass(frozen=True)
class Default:
    """An option's value when a call leaves it out: metadata in its `Annotated` type, so that the
    declaration that editors show is also the one `prepare_call` reads at run time."""

    value: object


class StreamOptions(TypedDict, total=False):
    """The keyword arguments of `LLM.stream` (see `LLM.run` for their meaning)."""

    reasoning: Annotated[bool, Default(False)]
    max_reasoning_tokens: Annotated[int | None, Default(None)]
    describe_output: Annotated[bool, Default(True)]
    # Room for a typed object with some reasoning in front of it.
    max_tokens: Annotated[int, Default(512)]
    # None is greedy (0.0), or DEFAULT_SAMPLES_TEMPERATURE with samples > 1.
    temperature: Annotated[float | None, Default(None)]
    top_k: Annotated[int | None, Default(None)]
    top_p: Annotated[float, Default(1.0)]
    min_p: Annotated[float, Default(0.0)]
    seed: Annotated[int | None, Default(None)]
    stop: Annotated[str | Sequence[str] | None, Default(None)]
    repetition_penalty: Annotated[float, Default(1.0)]
    presence_penalty: Annotated[float, Default(0.0)]
    frequency_penalty: Annotated[float, Default(0.0)]
    num_beams: Annotated[int, Default(1)]
    length_penalty: Annotated[float, Default(1.0)]
    # Steer a looping constrained value to its end (runtime.engine.runaway).
    runaway_guard: Annotated[bool, Default(True)]
    tools: Annotated[Sequence[ToolLike] | None, Default(None)]
    tool_choice: Annotated[object, Default("auto")]
    parallel_tool_calls: Annotated[bool, Default(True)]


class CallOptions(StreamOptions, total=False):
    """The keyword arguments of `LLM.generate` and `LLM.run`: those of `stream`, plus
    self-consistency and retries (which do not stream)."""

    samples: Annotated[int, Default(1)]
    vote_on: Annotated[VoteKey, Default(None)]
    retries: Annotated[int, Default(0)]


def _declared_defaults(options: type) -> dict[str, object]:
    """Each declared option's `Default`, in declaration order.

    Raises:
        TypeError: an option declares no `Default` (a mistake in this module, found at import).
    """
    defaults: dict[str, object] = {}
    for name, hint in get_type_hints(options, include_extras=True).items():
        found = [meta for meta in getattr(hint, "__metadata__", ()) if isinstance(meta, Default)]
        if len(found) != 1:
            raise TypeError(f"option {name!r} must declare exactly one Default")
        defaults[name] = found[0].value
    return defaults


#: Every option's default, read from the declarations above.
OPTION_DEFAULTS: Mapping[str, object] = MappingProxyType(_declared_defaults(CallOptions))
#: The keyword arguments `stream` accepts, and those `generate` and `run` accept.
STREAM_OPTIONS: frozenset[str] = frozenset(_declared_defaults(StreamOptions))
CALL_OPTIONS: frozenset[str] = frozenset(OPTION_DEFAULTS)


@dataclass(frozen=True)
class Call:
    """A validated call, ready for a backend.

    Attributes:
        messages: the chat messages to render.
        spec: the resolved output.
        constraint: what the completion must follow (the output's, or reasoning + the output's,
            or the output's or tool calls).
        params: sampling parameters (`n` = samples).
        reasoning: whether the completion is reasoning, marker, answer.
        vote_on: what self-consistency votes on.
        retries: attempts left for validation errors.
        tools: the tools the completion may call (None: no calls can be written).
        template_variables: more chat-template variables (the tools, for a template with a tool
            format), None when there are none.
    """

    messages: list[Message]
    spec: OutputSpec
    constraint: RuntimeConstraint | None
    params: SamplingParams
    reasoning: bool
    vote_on: VoteKey
    retries: int
    tools: ToolRequest | None = None
    template_variables: Mapping[str, Any] | None = None

    @property
    def num_samples(self) -> int:
        return self.params.n


def resolve_options(options: Mapping[str, object], accepted: frozenset[str] = CALL_OPTIONS) -> CallOptions:
    """Every option of a call: the given ones, and the declared defaults for the rest.

    Values are not checked here (`prepare_call` does that); keywords are, since a misspelt one
    would otherwise be ignored without a word.

    Args:
        options: the keyword arguments a caller gave.
        accepted: the names the calling method declares (`CALL_OPTIONS` or `STREAM_OPTIONS`).

    Raises:
        RequestError: a keyword that is not an option of the method (`field` names it).
    """
    for name in options:
        if name in accepted:
            continue
        if name in CALL_OPTIONS:
            raise RequestError("self-consistency and retries do not stream; use run", name)
        close = difflib.get_close_matches(name, sorted(accepted), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise RequestError(f"not a keyword argument of this method{hint}", name)
    return cast(CallOptions, {**OPTION_DEFAULTS, **options})


def prepare_call(
    prompt: PromptInput,
    output: Any,
    options: Mapping[str, object],
    *,
    accepted: frozenset[str] = CALL_OPTIONS,
    tool_format: ToolFormat = ToolFormat.GENERIC,
    enforces_constraints: bool = True,
) -> Call:
    """Check and resolve a call (see `sdk.LLM.run` for the meaning of the options).

    Args:
        prompt: the prompt as given.
        output: the output type as given.
        options: the keyword arguments as given; the missing ones take their declared defaults.
        accepted: the option names the calling method declares.
        tool_format: how the backend takes tools and past calls (`Backend.tool_format`).
        enforces_constraints: whether the backend's answers follow the constraint by construction
            (`Backend.enforces_constraints`); when not, any output can fail and be retried.

    Raises:
        RequestError: an unknown keyword, a control of the wrong type or out of range, or controls
            that conflict (`field` names the one to change).
        UnsupportedOutputTypeError, grammars.GrammarError: the output cannot be constrained.
    """
    resolved = resolve_options(options, accepted)
    reasoning, samples, retries = resolved["reasoning"], resolved["samples"], resolved["retries"]
    describe_output, max_tokens = resolved["describe_output"], resolved["max_tokens"]
    _check_flag(reasoning, "reasoning")
    _check_flag(describe_output, "describe_output")
    _check_count(samples, "samples", minimum=1)
    _check_count(retries, "retries", minimum=0)
    spec = output_spec(output)
    _check_conflicts(spec, resolved, enforces_constraints)
    temperature = resolved["temperature"]
    if temperature is None:
        temperature = DEFAULT_SAMPLES_TEMPERATURE if samples > 1 else 0.0
    params = SamplingParams(
        max_tokens=max_tokens,
        temperature=temperature,
        top_k=resolved["top_k"],
        top_p=resolved["top_p"],
        min_p=resolved["min_p"],
        seed=resolved["seed"],
        stop=_stop_strings(resolved["stop"]),
        repetition_penalty=resolved["repetition_penalty"],
        presence_penalty=resolved["presence_penalty"],
        frequency_penalty=resolved["frequency_penalty"],
        n=samples,
        num_beams=resolved["num_beams"],
        length_penalty=resolved["length_penalty"],
        runaway_guard=resolved["runaway_guard"],
    )
    constraint = _constraint(spec, reasoning, resolved["max_reasoning_tokens"], max_tokens)
    messages = build_messages(prompt, spec, reasoning=reasoning, describe_output=describe_output)
    prompt_with_tools, constraint, tools = prepare_tools(messages, spec, constraint, resolved, tool_format)
    return Call(
        prompt_with_tools.messages,
        spec,
        constraint,
        params,
        reasoning,
        resolved["vote_on"],
        retries,
        tools,
        prompt_with_tools.template_variables or None,
    )


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


def _check_conflicts(spec: OutputSpec, options: CallOptions, enforces_constraints: bool) -> None:
    """Controls that are each valid but do not combine."""
    samples, vote_on, stop = options["samples"], options["vote_on"], options["stop"]
    if samples > 1 and options["num_beams"] != 1:
        raise RequestError("beam search and self-consistency sampling do not combine; use one", "num_beams")
    if samples > 1 and options["temperature"] == 0.0:
        raise RequestError("samples > 1 at temperature 0 would draw the same answer every time", "temperature")
    if vote_on is not None:
        if samples == 1:
            raise RequestError("only applies to self-consistency (samples > 1)", "vote_on")
        spec.check_vote_key(vote_on)
    # Under an enforced constraint only a Python type's validators, or a tool's, can reject an
    # answer; a backend that cannot enforce it (a remote server) may break any output.
    can_calls_fail = options["tools"] is not None and options["tool_choice"] != "none"
    if options["retries"] and enforces_constraints and not (spec.is_validated or can_calls_fail):
        raise RequestError(
            "only validated outputs (Python types and Pydantic models) and tool calls can fail "
            "validation and be retried",
            "retries",
        )
    if stop and spec.kind is not OutputKind.TEXT:
        raise RequestError("a stop string would cut a constrained output; the constraint ends it", "stop")
    if stop and options["reasoning"]:
        raise RequestError("a stop string would also end the reasoning, before any answer", "stop")


def _stop_strings(stop: object) -> tuple[str, ...]:
    """`stop` as the tuple `SamplingParams` holds (which checks the strings themselves)."""
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,)
    if isinstance(stop, (list, tuple)):
        return tuple(stop)
    raise RequestError(f"must be a string or a list of strings, got {stop!r}", "stop")


def _check_flag(value: object, field: str) -> None:
    if not isinstance(value, bool):
        raise RequestError(f"must be a bool, got {value!r}", field)


def _check_count(value: object, field: str, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise RequestError(f"must be an int >= {minimum}, got {value!r}", field)


@dataclass(frozen=True, kw_only=True)
class Speculative:
    """Fast paths of a local model: speculative decoding, with the constraint as one draft source.

    Every draft is checked against the constraint and verified by the model in one forward pass, so
    greedy outputs are the plain ones token for token and sampling keeps its distribution: in the
    default mode (4-bit weights, compiled kernels) a verify pass scores each row bitwise as a
    one-token step would; elsewhere up to rounding (see runtime.engine.speculative).

    Attributes:
        num_draft_tokens: most draft tokens per sequence per step (>= 1).
        jump_forward: draft the text the constraint forces next (JSON keys and punctuation, enum tails).
        prompt_lookup: draft by n-gram lookup in the prompt and the output so far (copied spans).
        draft_model: a smaller model with the same tokenizer drafting the rest: a `.gguf` file, a
            Hugging Face folder or a loaded `runtime.Engine` (its model is used, with a KV cache of
            its own). A draft with another vocabulary is refused (`RequestError`).
        self_draft_layers: draft with the model's own first n layers (self-speculation: weights
            shared, a small KV cache of its own). Exact, but it never paid on SmolLM2 on a 2-core
            CPU (n = 4, 8, 12 of 30 layers: 5-16% of drafts accepted, 0.24-1.02x plain tokens/s;
            benchmarks/speculative.py): an early exit never trained as one rarely agrees.
    """

    num_draft_tokens: int = 6
    jump_forward: bool = True
    prompt_lookup: bool = True
    draft_model: str | os.PathLike[str] | Engine | None = None
    self_draft_layers: int | None = None


#: What `LLM(speculative=...)` accepts: None (off), "ngram" (prompt lookup), "auto" (jump-forward and
#: prompt lookup), or an `sdk.Speculative`.
SpeculativeOption = Speculative | str | None


def speculative_config(speculative: SpeculativeOption) -> Any:
    """The runtime's `SpeculativeConfig` for an `LLM(speculative=...)` value (None: off).

    Raises:
        RequestError: an unknown name or a value out of range (field "speculative" or the attribute).
    """
    from runtime.engine.speculative import SpeculativeConfig

    if speculative is None:
        return None
    if speculative == "auto":
        return SpeculativeConfig()
    if speculative == "ngram":
        return SpeculativeConfig(jump_forward=False)
    if isinstance(speculative, Speculative):
        return SpeculativeConfig(
            num_draft_tokens=speculative.num_draft_tokens,
            jump_forward=speculative.jump_forward,
            prompt_lookup=speculative.prompt_lookup,
            draft_model=speculative.draft_model,
            self_draft_layers=speculative.self_draft_layers,
        )
    raise RequestError(f'expected None, "ngram", "auto" or sdk.Speculative, got {speculative!r}', "speculative")
