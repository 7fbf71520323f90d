"""Sampling: the request knobs (`SamplingParams`) and the batched logits processors that apply them.

Processing order, per step, for the rows of a batch that sample a token (fixed; documented in
docs/architecture.md):

    grammar mask -> repetition / presence / frequency penalties -> temperature -> top-k -> top-p
    -> min-p -> sample (argmax when temperature == 0)

Logprobs (and beam-search scores) are taken after the mask and penalties and before temperature and
truncation: they are the model's distribution as the constraint and penalties shaped it, the same for
greedy and sampled requests. Each processor works on the whole batch at once; the only per-row Python
loops are over things that are per-sequence by nature (a matcher's mask, a seeded generator's noise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import torch

from runtime.engine.sequence import TokenLogprob
from runtime.errors import RequestError

if TYPE_CHECKING:
    from collections.abc import Sequence as SequenceOf

    from runtime.engine.sequence import Sequence

#: Most alternatives `SamplingParams.logprobs` may ask for (OpenAI's limit).
MAX_LOGPROBS = 20


@dataclass(frozen=True, kw_only=True)
class SamplingParams:
    """How to pick tokens for one request; names and meanings follow vLLM and OpenAI.

    Defaults are vLLM's, except `max_tokens` (256 rather than 16, which cuts most answers short):
    plain sampling at temperature 1.0 over the full distribution, no penalties, one completion.

    Attributes:
        max_tokens: most completion tokens to generate (>= 1).
        temperature: softmax temperature (>= 0); 0 means greedy (argmax).
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

    Raises:
        RequestError: a value of the wrong type or out of range, or knobs that do not combine; `field`
            names the parameter.
    """

    max_tokens: int = 256
    temperature: float = 1.0
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


def _is_int(value: object) -> bool:
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


# Processors. `logits` is float32 [R, V]: one row per sequence that samples this step.


def apply_constraint_masks(logits: torch.Tensor, seqs: SequenceOf[Sequence]) -> list[bool]:
    """Set disallowed logits to -inf, in place, for every sequence with a matcher.

    Returns:
        Per row, whether the sequence can go on: False where its matcher has an error, returns a mask
        that allows nothing, or returns a mask of the wrong width. Such rows must not be sampled.
    """
    is_alive = [True] * len(seqs)
    row_ids: list[int] = []
    masks: list[torch.Tensor] = []
    for row, seq in enumerate(seqs):
        matcher = seq.matcher
        if matcher is None:
            continue
        mask = matcher.mask() if matcher.error is None else None
        if mask is None or matcher.error is not None or mask.shape != logits.shape[1:]:
            is_alive[row] = False
            continue
        row_ids.append(row)
        masks.append(mask)
    if not masks:
        return is_alive
    allowed_mask = torch.stack(masks)  # [M, V] bool
    index = torch.tensor(row_ids)
    logits[index] = logits[index].masked_fill_(~allowed_mask, -math.inf)
    for row, has_allowed in zip(row_ids, allowed_mask.any(dim=-1).tolist()):
        is_alive[row] = has_allowed
    return is_alive


def apply_penalties(logits: torch.Tensor, seqs: SequenceOf[Sequence], params: SequenceOf[SamplingParams]) -> None:
    """Apply repetition, presence and frequency penalties, in place, to the rows that ask for them.

    Repetition penalty (as in Hugging Face and vLLM) covers prompt and completion tokens; presence and
    frequency penalties (as in OpenAI) cover completion tokens only.
    """
    rows = [row for row, p in enumerate(params) if p.has_penalties]
    if not rows:
        return
    vocab_size = logits.shape[1]
    completion_counts = _token_counts([seqs[row].completion_token_ids for row in rows], vocab_size)  # [R, V]
    seen_mask = _token_counts([seqs[row].token_ids for row in rows], vocab_size) > 0  # [R, V]
    index = torch.tensor(rows)
    penalized = logits[index]  # [R, V]
    repetition = torch.tensor([params[row].repetition_penalty for row in rows]).unsqueeze(1)  # [R, 1]
    scaled = torch.where(penalized > 0, penalized / repetition, penalized * repetition)
    penalized = torch.where(seen_mask, scaled, penalized)
    frequency = torch.tensor([params[row].frequency_penalty for row in rows]).unsqueeze(1)  # [R, 1]
    presence = torch.tensor([params[row].presence_penalty for row in rows]).unsqueeze(1)  # [R, 1]
    penalized -= frequency * completion_counts + presence * (completion_counts > 0)
    logits[index] = penalized


def _token_counts(token_id_lists: list[list[int]], vocab_size: int) -> torch.Tensor:
    """Occurrences of each token id per list, as float32 [R, V]."""
    max_len = max(1, max(len(ids) for ids in token_id_lists))
    # Padding points at an extra column that is dropped, so short lists need no mask.
    padded = torch.full((len(token_id_lists), max_len), vocab_size, dtype=torch.long)  # [R, L]
    for row, ids in enumerate(token_id_lists):
        padded[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    counts = torch.zeros(len(token_id_lists), vocab_size + 1)  # [R, V + 1]
    counts.scatter_add_(1, padded, torch.ones(padded.shape))
    return counts[:, :vocab_size]


def sample_tokens(
    logits: torch.Tensor,
    params: SequenceOf[SamplingParams],
    generators: SequenceOf[torch.Generator | None],
) -> list[int]:
    """Pick one token per row: argmax where temperature is 0, else temperature/top-k/top-p/min-p sampling.

    Args:
        logits: float32 [R, V], after masks and penalties; not modified.
        params: each row's parameters.
        generators: each row's random generator (None: the global one).

    Returns:
        The chosen token id per row.
    """
    if all(p.is_greedy for p in params):
        return argmax_rows(logits).tolist()
    token_ids = argmax_rows(logits)  # [R]; greedy rows keep these
    rows = [row for row, p in enumerate(params) if not p.is_greedy]
    row_params = [params[row] for row in rows]
    index = torch.tensor(rows)
    temperature = torch.tensor([p.temperature for p in row_params]).unsqueeze(1)  # [S, 1]
    scaled = logits[index] / temperature  # [S, V]
    if any(p.has_truncation for p in row_params):
        probs, candidate_ids = _truncated_probs(scaled, row_params)  # [S, C], [S, C]
    else:
        probs, candidate_ids = scaled.softmax(dim=-1), None
    noise = torch.empty_like(probs)  # [S, C]
    for offset, row in enumerate(rows):
        noise[offset].exponential_(generator=generators[row])
    # An exact 0 draw would turn a zero probability into 0/0 = NaN, which argmax picks.
    noise.clamp_(min=torch.finfo(noise.dtype).tiny)
    # Exponential race (Gumbel-max): argmax(p / E) with E ~ Exp(1) draws from p.
    choice = argmax_rows(probs / noise).unsqueeze(1)  # [S, 1]
    if candidate_ids is not None:
        choice = candidate_ids.gather(1, choice)
    token_ids[index] = choice.squeeze(1)
    return token_ids.tolist()


def argmax_rows(values: torch.Tensor) -> torch.Tensor:
    """Index of each row's maximum (the first one on ties), int64 [R].

    On CPU this goes through numpy: torch's CPU argmax is not vectorized, and over a 49k-wide row it
    measured ~7x slower than numpy's (the greedy decode step's largest cost after the model).
    """
    if values.device.type == "cpu":
        return torch.from_numpy(values.numpy().argmax(axis=-1))
    return values.argmax(dim=-1)


def _truncated_probs(scaled: torch.Tensor, params: SequenceOf[SamplingParams]) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities over each row's candidates, best first, after top-k, top-p and min-p.

    Returns:
        (probs [S, C], candidate_ids [S, C]); C is the largest top_k when every row sets one (a
        partial sort), else the vocabulary.
    """
    vocab_size = scaled.shape[1]
    if all(p.top_k is not None for p in params):
        num_candidates = min(vocab_size, max(p.top_k for p in params))
        sorted_logits, candidate_ids = scaled.topk(num_candidates, dim=-1)  # [S, C]
    else:
        sorted_logits, candidate_ids = scaled.sort(dim=-1, descending=True)  # [S, V]
        num_candidates = vocab_size
    positions = torch.arange(num_candidates).unsqueeze(0)  # [1, C]
    top_k = torch.tensor([p.top_k or vocab_size for p in params]).unsqueeze(1)  # [S, 1]
    sorted_logits = sorted_logits.masked_fill(positions >= top_k, -math.inf)
    probs = sorted_logits.softmax(dim=-1)
    top_p = torch.tensor([p.top_p for p in params]).unsqueeze(1)  # [S, 1]
    # Keep a token while the mass before it is below top_p; the most likely token always stays.
    mass_before = probs.cumsum(dim=-1) - probs
    probs = probs.masked_fill(mass_before >= top_p, 0.0)
    min_p = torch.tensor([p.min_p for p in params]).unsqueeze(1)  # [S, 1]
    probs = probs.masked_fill(probs < min_p * probs[:, :1], 0.0)
    return probs, candidate_ids


def token_logprobs(logits: torch.Tensor, token_ids: SequenceOf[int], num_top: SequenceOf[int]) -> list[TokenLogprob]:
    """Logprob of each row's chosen token plus its `num_top` best alternatives.

    Args:
        logits: float32 [R, V] after masks and penalties.
        token_ids: the token chosen in each row.
        num_top: how many alternatives each row reports.
    """
    logprobs = logits.log_softmax(dim=-1)  # [R, V]
    chosen = logprobs.gather(1, torch.tensor(token_ids).unsqueeze(1)).squeeze(1).tolist()
    max_top = max(num_top, default=0)
    if max_top:
        top_values, top_ids = logprobs.topk(max_top, dim=-1)  # [R, K]
        top_values, top_ids = top_values.tolist(), top_ids.tolist()
    results = []
    for row, (token_id, logprob) in enumerate(zip(token_ids, chosen)):
        top = tuple(zip(top_ids[row][: num_top[row]], top_values[row][: num_top[row]])) if max_top else ()
        results.append(TokenLogprob(token_id=token_id, logprob=logprob, top_logprobs=top))
    return results
