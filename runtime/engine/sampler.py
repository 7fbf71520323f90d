"""The batched logits processors and the sampler: how a step turns logits into tokens.

Processing order, per step, for the rows of a batch that sample a token (fixed; documented in
docs/architecture.md):

    grammar mask (the closing mask for a looping sequence: runtime.engine.runaway)
    -> repetition / presence / frequency penalties -> temperature -> top-k -> top-p
    -> min-p -> sample (argmax when temperature == 0)

Logprobs (and beam-search scores) are taken after the mask and penalties and before temperature and
truncation: they are the model's distribution as the constraint and penalties shaped it, the same for
greedy and sampled requests. Each processor works on the whole batch at once; the only per-row Python
loops are over things that are per-sequence by nature (a matcher's mask, a seeded generator's noise).
Every processor takes `logits` as float32 [R, V]: one row per sequence that samples this step.

This stays in the engine rather than beside the model runner: it reads each `Sequence`'s matcher and
tokens and each request's `SamplingParams`, both control-plane state, and the device plane
(`runtime.model`) imports nothing from the engine.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from runtime.engine.runaway import closing_mask
from runtime.engine.sequence import TokenLogprob

if TYPE_CHECKING:
    from collections.abc import Sequence as SequenceOf

    from runtime.engine.sampling_params import SamplingParams
    from runtime.engine.sequence import Sequence


def apply_constraint_masks(
    logits: torch.Tensor,
    seqs: SequenceOf[Sequence],
    max_remaining_tokens: SequenceOf[int | None],
    closing: SequenceOf[bool] | None = None,
) -> list[bool]:
    """Set disallowed logits to -inf, in place, for every sequence with a matcher.

    Args:
        logits: float32 [R, V].
        seqs: the sequence of each row.
        max_remaining_tokens: per row, the tokens its sequence may still produce (this one
            included), passed to its matcher's `mask` (None: unbounded).
        closing: per row, whether the runaway guard steers it: its matcher's closing mask is
            applied instead of the plain one (see runtime.engine.runaway); None: no row.

    Returns:
        Per row, whether the sequence can go on: False where its matcher has an error, returns a mask
        that allows nothing, or returns a mask of the wrong width. Such rows must not be sampled.
    """
    is_alive = [True] * len(seqs)
    for row, (seq, budget) in enumerate(zip(seqs, max_remaining_tokens)):
        matcher = seq.matcher
        if matcher is None:
            continue
        mask = None
        if matcher.error is None:
            is_closing = closing is not None and closing[row]
            mask = closing_mask(matcher, budget) if is_closing else matcher.mask(max_remaining_tokens=budget)
        if mask is None or matcher.error is not None or mask.shape != logits.shape[1:]:
            is_alive[row] = False
            continue
        # Row by row, in place: a third of the time of stacking the masks and gathering the rows, and
        # numpy's `any` over the mask's memory is a tenth of torch's (which wakes its thread pool).
        logits[row].masked_fill_(mask.logical_not(), -math.inf)
        is_alive[row] = bool(mask.numpy().any())
    return is_alive


def apply_penalties(logits: torch.Tensor, seqs: SequenceOf[Sequence], params: SequenceOf[SamplingParams]) -> None:
    """Apply repetition, presence and frequency penalties, in place, to the rows that ask for them.

    Repetition penalty (as in Hugging Face and vLLM) covers prompt and completion tokens; presence and
    frequency penalties (as in OpenAI) cover completion tokens only.
    """
    apply_token_penalties(logits, [seq.token_ids for seq in seqs], [seq.num_prompt_tokens for seq in seqs], params)


def apply_token_penalties(
    logits: torch.Tensor,
    token_id_lists: SequenceOf[SequenceOf[int]],
    num_prompt_tokens: SequenceOf[int],
    params: SequenceOf[SamplingParams],
) -> None:
    """`apply_penalties` over plain token lists: row r follows `token_id_lists[r]`, of which the first
    `num_prompt_tokens[r]` are its prompt (speculative verification scores positions inside a draft)."""
    rows = [row for row, p in enumerate(params) if p.has_penalties]
    if not rows:
        return
    vocab_size = logits.shape[1]
    completions = [list(token_id_lists[row][num_prompt_tokens[row] :]) for row in rows]
    completion_counts = _token_counts(completions, vocab_size)  # [R, V]
    seen_mask = _token_counts([list(token_id_lists[row]) for row in rows], vocab_size) > 0  # [R, V]
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
    choice = sample_from_probs(probs, [generators[row] for row in rows]).unsqueeze(1)  # [S, 1]
    if candidate_ids is not None:
        choice = candidate_ids.gather(1, choice)
    token_ids[index] = choice.squeeze(1)
    return token_ids.tolist()


def sample_from_probs(probs: torch.Tensor, generators: SequenceOf[torch.Generator | None]) -> torch.Tensor:
    """One draw per row of `probs` (float32 [S, C], rows summing to 1 or any positive total), int64 [S]."""
    noise = torch.empty_like(probs)  # [S, C]
    for row, generator in enumerate(generators):
        noise[row].exponential_(generator=generator)
    # An exact 0 draw would turn a zero probability into 0/0 = NaN, which argmax picks.
    noise.clamp_(min=torch.finfo(noise.dtype).tiny)
    # Exponential race (Gumbel-max): argmax(p / E) with E ~ Exp(1) draws from p.
    return argmax_rows(probs / noise)


def sampling_probs(logits: torch.Tensor, params: SequenceOf[SamplingParams]) -> torch.Tensor:
    """The distribution `sample_tokens` draws each sampled row from, over the whole vocabulary.

    Args:
        logits: float32 [R, V], after masks and penalties; no row greedy.
        params: each row's parameters.

    Returns:
        float32 [R, V]: temperature, then top-k / top-p / min-p (truncated tokens 0; rows may sum
        to slightly less than 1 after min-p and top-p, which only scales them).
    """
    temperature = torch.tensor([p.temperature for p in params]).unsqueeze(1)  # [R, 1]
    scaled = logits / temperature  # [R, V]
    if not any(p.has_truncation for p in params):
        return scaled.softmax(dim=-1)
    probs, candidate_ids = _truncated_probs(scaled, params)  # [R, C], [R, C]
    probs = probs / probs.sum(dim=-1, keepdim=True)
    return torch.zeros_like(scaled).scatter_(1, candidate_ids, probs)


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
    top_ks = [p.top_k for p in params if p.top_k is not None]
    if len(top_ks) == len(params):
        num_candidates = min(vocab_size, max(top_ks))
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
    top_values: list[list[float]] = []
    top_ids: list[list[int]] = []
    if max_top:
        top = logprobs.topk(max_top, dim=-1)  # [R, K] each
        top_values, top_ids = top.values.tolist(), top.indices.tolist()
    results = []
    for row, (token_id, logprob) in enumerate(zip(token_ids, chosen)):
        top_logprobs = tuple(zip(top_ids[row][: num_top[row]], top_values[row][: num_top[row]])) if max_top else ()
        results.append(TokenLogprob(token_id=token_id, logprob=logprob, top_logprobs=top_logprobs))
    return results
