"""Request sampling parameters: `SamplingParams`, validated when built, with vLLM's names and meanings.

This is the control plane's view of sampling (what a request asks for); `runtime.engine.sampler`
applies it to a batch's logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import TypeGuard

from runtime.errors import RequestError

#: Most alternatives `SamplingParams.logprobs` may ask for (OpenAI's limit).
MAX_LOGPROBS = 20


@dataclass(frozen=True, kw_only=True)
class SamplingParams:
    """How to pick tokens for one request; names and meanings follow vLLM and OpenAI.

    The default is greedy decoding (temperature 0.0), as in the SDK, not vLLM's 1.0: typed extraction
    wants the model's most likely answer, and the same answer on every run; sampling is opt-in (set a
    temperature). Other defaults are vLLM's, except `max_tokens` (256 rather than 16, which cuts most
    answers short): the full distribution, no penalties, one completion.

    Attributes:
        max_tokens: most completion tokens to generate (>= 1).
        temperature: softmax temperature (>= 0); 0, the default, means greedy (argmax).
        top_k: keep only the k most likely tokens (>= 1); None keeps all.
        top_p: keep the smallest set of tokens whose probability sums to top_p, in (0, 1].
        min_p: drop tokens less likely than min_p times the most likely one, in [0, 1].
        seed: seed of this request's random stream, for reproducible sampling; None draws from the engine's.
        stop: strings that end the completion when generated (not included in the text).
        stop_token_ids: token ids that end the completion (kept in token_ids, not in the text).
        ignore_eos: keep generating past EOS (until max_tokens, a stop string or a stop token).
        repetition_penalty: > 0; divides positive (multiplies negative) logits of tokens already in the
            prompt or completion; 1.0 is off.
        presence_penalty: in [-2, 2]; subtracted once from the logit of every token the completion holds.
        frequency_penalty: in [-2, 2]; subtracted per occurrence in the completion.
        logprobs: None, or how many most likely alternatives to report with each token's logprob (0..20).
        n: completions to return; parallel samples share the prompt's KV blocks.
        num_beams: beam width; > 1 runs beam search (deterministic; returns the n best beams).
        length_penalty: beam scores are cumulative logprob / length ** length_penalty (beam search only).
        runaway_guard: steer a constrained completion caught in a loop (`1000000...`, a repeated phrase
            or item) toward closing its value, within what the constraint allows (not a vLLM knob;
            see runtime.engine.runaway). On by default; completions that never loop are unchanged.

    Raises:
        RequestError: a value of the wrong type or out of range, or knobs that do not combine; `field`
            names the parameter.
    """

    max_tokens: int = 256
    temperature: float = 0.0
    top_k: int | None = None
    top_p: float = 1.0
    min_p: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: int | None = None
    n: int = 1
    num_beams: int = 1
    length_penalty: float = 1.0
    runaway_guard: bool = True

    def __post_init__(self) -> None:
        stop = (self.stop,) if isinstance(self.stop, str) else self.stop
        if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) and s for s in stop):
            raise RequestError("must be a non-empty string or a sequence of non-empty strings", "stop")
        object.__setattr__(self, "stop", tuple(stop))
        if not isinstance(self.stop_token_ids, (list, tuple)) or not all(
            _is_int(t) and t >= 0 for t in self.stop_token_ids
        ):
            raise RequestError("must be a sequence of non-negative token ids", "stop_token_ids")
        object.__setattr__(self, "stop_token_ids", tuple(self.stop_token_ids))
        _check_int(self.max_tokens, "max_tokens", minimum=1)
        _check_float(self.temperature, "temperature", 0.0, math.inf)
        if self.top_k is not None:
            _check_int(self.top_k, "top_k", minimum=1)
        _check_float(self.top_p, "top_p", 0.0, 1.0, include_low=False)
        _check_float(self.min_p, "min_p", 0.0, 1.0)
        if self.seed is not None:
            _check_int(self.seed, "seed", minimum=0)
        if not isinstance(self.ignore_eos, bool):
            raise RequestError(f"must be a bool, got {self.ignore_eos!r}", "ignore_eos")
        _check_float(self.repetition_penalty, "repetition_penalty", 0.0, math.inf, include_low=False)
        _check_float(self.presence_penalty, "presence_penalty", -2.0, 2.0)
        _check_float(self.frequency_penalty, "frequency_penalty", -2.0, 2.0)
        if self.logprobs is not None:
            _check_int(self.logprobs, "logprobs", minimum=0, maximum=MAX_LOGPROBS)
        _check_int(self.n, "n", minimum=1)
        _check_int(self.num_beams, "num_beams", minimum=1)
        _check_float(self.length_penalty, "length_penalty", -math.inf, math.inf)
        if not isinstance(self.runaway_guard, bool):
            raise RequestError(f"must be a bool, got {self.runaway_guard!r}", "runaway_guard")
        self._check_beam_search()

    def _check_beam_search(self) -> None:
        if not self.use_beam_search:
            if self.length_penalty != 1.0:
                raise RequestError("only applies to beam search (num_beams > 1)", "length_penalty")
            return
        if self.n > self.num_beams:
            raise RequestError(f"beam search returns at most num_beams={self.num_beams} completions", "n")
        # Beam search ranks by the model's logprobs; sampling knobs would be silently meaningless.
        if self.temperature not in (0.0, 1.0):
            raise RequestError("beam search is deterministic; leave temperature at 0 or 1", "temperature")
        for name, default in (("top_k", None), ("top_p", 1.0), ("min_p", 0.0), ("seed", None)):
            if getattr(self, name) != default:
                raise RequestError("does not apply to beam search (num_beams > 1)", name)
        if self.stop:
            raise RequestError("stop strings are not supported with beam search; use stop_token_ids", "stop")

    @property
    def use_beam_search(self) -> bool:
        """Whether the request runs beam search rather than sampling."""
        return self.num_beams > 1

    @property
    def is_greedy(self) -> bool:
        """Whether tokens are picked by argmax (temperature 0)."""
        return self.temperature == 0.0

    @property
    def has_penalties(self) -> bool:
        """Whether any repetition, presence or frequency penalty is on."""
        return self.repetition_penalty != 1.0 or self.presence_penalty != 0.0 or self.frequency_penalty != 0.0

    @property
    def has_truncation(self) -> bool:
        """Whether top-k, top-p or min-p cut the distribution."""
        return self.top_k is not None or self.top_p < 1.0 or self.min_p > 0.0

    def replace(self, **changes: object) -> SamplingParams:
        """A copy with some fields changed (validated again)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        unknown = set(changes) - set(values)
        if unknown:
            raise RequestError("unknown sampling parameter", sorted(unknown)[0])
        values.update(changes)
        return SamplingParams(**values)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_int(value: object, name: str, *, minimum: int, maximum: int | None = None) -> None:
    if not _is_int(value):
        raise RequestError(f"must be an int, got {value!r}", name)
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise RequestError(f"must be {bound}, got {value}", name)


def _check_float(value: object, name: str, low: float, high: float, *, include_low: bool = True) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise RequestError(f"must be a number, got {value!r}", name)
    too_low = value < low or (value == low and not include_low)
    if too_low or value > high:
        interval = f"{'[' if include_low else '('}{low}, {high}]"
        raise RequestError(f"must be in {interval}, got {value}", name)
