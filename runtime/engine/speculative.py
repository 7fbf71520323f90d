"""Speculative decoding and jump-forward: drafts proposed, checked against the constraint, verified in one pass.

Jump-forward is speculation with the grammar as the draft source. Each decode step a sequence may
carry a draft of up to `num_draft_tokens` tokens from, in this order:

- the constraint (`jump_forward`): the bytes it forces next (`{"name": "`, a closing `"}`, an enum
  tail), encoded by the tokenizer as the model would write them;
- prompt lookup (`prompt_lookup`): the tokens that followed the latest earlier occurrence of the
  sequence's last 1..`max_ngram` tokens, in the prompt or the output so far (extraction copies spans);
  with a draft model, only a match of all `max_ngram` tokens (a copied span), else the model drafts;
- a draft model (`draft_model`, or the target's own early layers with `self_draft_layers`; see
  runtime.engine.draft_model): it decodes the rest, one batched pass per token over every drafting
  sequence, each step under the sequence's mask, penalties, temperature and truncation, greedy when
  the request is, else sampled from that processed distribution q (end-of-text and stop tokens get
  q = 0: the draft never ends a text, the target does).

Every draft is walked through a fork of the sequence's matcher (the real matcher never sees it): each
position's mask (the one the plain step would use there: its budget, the runaway guard's closing
mask) is kept, and a token the mask forbids ends the draft. The target then scores the last token and
the draft in one (k+1)-token forward; position i's logits go through that position's mask and the
request's penalties, temperature and truncation, exactly as a plain step's would, giving p_i. The
standard rejection rule then accepts a prefix:

    greedy:  accept draft token x while x is the argmax; the first argmax that differs is the output;
    sampled: accept x with probability min(1, p(x) / q(x)); on rejection draw from max(0, p - q),
             renormalized; after k acceptances one more token is drawn from p_k (the bonus token).

Forced and looked-up tokens are deterministic functions of the context: their q is one-hot, so
accepting is a coin of p(x) and the residual is p with x removed. So greedy output is the plain output
token for token and sampled output has the plain distribution, given the same logits (and masks that
always leave the constraint a way on, which they do barring a matcher error). The logits are the
same: with the compiled kernels (`runtime.model.kernels`) a decode or verify pass is batch invariant,
so a verification row is bitwise the one-token decode step of that position, and greedy output is
the plain output exactly (tested on 50 SmolLM2 prompts in the default bfloat16 4-bit mode). Where
torch's matmuls run instead (float32, unquantized models, no compiled kernels) a row rounds by the
pass's row count, so the guarantee there holds up to rounding: a near-tie can flip.
The engine then appends the accepted tokens through the normal path (matcher, detokenizer, stop
strings, limits), keeps the KV of the accepted positions and frees the blocks past them. Off for
beam search.

Adaptive length: a sequence's lookup allowance, and separately its draft model allowance, doubles (to
`num_draft_tokens`) while that source's tokens are accepted whole and drops to one past the accepted
count when they are not; forced text is always proposed (it is almost always accepted).
"""

from __future__ import annotations

import codecs
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from runtime.engine.runaway import closing_mask, ends_in_loop
from runtime.engine.sampler import apply_token_penalties, argmax_rows, sample_from_probs, sampling_probs
from runtime.errors import RequestError

if TYPE_CHECKING:
    from runtime.engine.constraints import TokenMatcher
    from runtime.engine.draft_model import DraftModel
    from runtime.engine.llm_engine import Engine
    from runtime.engine.sampling_params import SamplingParams
    from runtime.engine.sequence import Sequence
    from runtime.tokenizer import Tokenizer

#: Most forced bytes one jump-forward reads ahead (a long key or enum tail fits; the draft caps it anyway).
MAX_FORCED_BYTES = 64


@dataclass(frozen=True, kw_only=True)
class SpeculativeConfig:
    """Which draft sources the engine uses, and how far it drafts.

    Attributes:
        num_draft_tokens: most draft tokens per sequence per step (>= 1).
        jump_forward: draft the text the constraint forces next.
        prompt_lookup: draft by n-gram lookup in the prompt and the output so far.
        max_ngram: longest suffix looked up (>= 1); shorter ones are tried when it has no match.
        draft_model: a smaller model with the same tokenizer that drafts the rest: a `.gguf` file or a
            Hugging Face folder (loaded with `runtime.load`'s defaults), or a loaded `Engine` whose
            model it uses (with a KV pool of its own). None: no draft model.
        self_draft_layers: draft with the model's own first n layers and its head (self-speculation;
            weights shared, KV pool of n layers). Exact, but it never paid on SmolLM2 on a 2-core CPU
            (benchmarks/speculative.py, n = 4, 8, 12 of 30: 5-16% of drafts accepted, 0.24-1.02x the
            tokens/s of plain decoding): an early exit never trained as one rarely agrees with the model.
            Kept as an option because it costs no memory for weights and stays exact.

    Raises:
        RequestError: a value out of range, both draft models, or no draft source (field names it).
    """

    num_draft_tokens: int = 6
    jump_forward: bool = True
    prompt_lookup: bool = True
    max_ngram: int = 3
    draft_model: str | os.PathLike[str] | Engine | None = None
    self_draft_layers: int | None = None

    def __post_init__(self) -> None:
        for name in ("num_draft_tokens", "max_ngram"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise RequestError(f"must be an int >= 1, got {value!r}", name)
        layers = self.self_draft_layers
        if layers is not None and (isinstance(layers, bool) or not isinstance(layers, int) or layers < 1):
            raise RequestError(f"must be None or an int >= 1, got {layers!r}", "self_draft_layers")
        if layers is not None and self.draft_model is not None:
            raise RequestError("a draft model or self-speculation, not both", "self_draft_layers")
        if not (self.jump_forward or self.prompt_lookup or self.has_draft_model):
            raise RequestError("needs at least one draft source", "speculative")

    @property
    def has_draft_model(self) -> bool:
        """Whether a model (another one, or the target's early layers) drafts."""
        return self.draft_model is not None or self.self_draft_layers is not None


@dataclass
class Draft:
    """A checked draft of one sequence: forced tokens, then looked-up or modelled ones.

    Attributes:
        token_ids: the draft tokens (k >= 1), each allowed by the constraint where it stands.
        masks: k + 1 masks (bool [V]) for positions 0..k, or None for an unconstrained sequence.
        num_forced: how many leading tokens came from forced text.
        num_modelled: how many trailing tokens came from the draft model.
        probs: float32 [num_modelled, V]: the distribution q each modelled token was sampled from;
            None when every token is a deterministic function of the context (q one-hot).
    """

    token_ids: list[int]
    masks: list[torch.Tensor] | None
    num_forced: int
    num_modelled: int = 0
    probs: torch.Tensor | None = None

    def draft_probs(self, index: int) -> torch.Tensor | None:
        """q at draft position `index` (float32 [V]), None where it is one-hot."""
        first_modelled = len(self.token_ids) - self.num_modelled
        if self.probs is None or index < first_modelled:
            return None
        return self.probs[index - first_modelled]


class _Walk:
    """A draft in the making: its tokens, walked through a fork of the sequence's matcher, and the mask
    at each position (k + 1 of them); closed at the first token that cannot join it."""

    def __init__(self, seq: Sequence, params: SamplingParams, budget: int, end_ids: frozenset[int]) -> None:
        self.seq, self.params, self.budget = seq, params, budget
        self.end_ids = (frozenset() if params.ignore_eos else end_ids) | frozenset(params.stop_token_ids)
        self.token_ids: list[int] = []
        self.num_forced = 0
        self.modelled_probs: list[torch.Tensor] = []
        self.num_modelled = 0
        self._matcher = seq.matcher
        self.masks: list[torch.Tensor] | None = None
        self.is_open = True
        if seq.matcher is not None:
            first = self._mask_after([])
            self.masks = [first] if first is not None else []
            self.is_open = first is not None

    @property
    def mask(self) -> torch.Tensor | None:
        """The mask of the next draft position (None: unconstrained)."""
        return self.masks[-1] if self.masks else None

    def push(self, token_id: int) -> bool:
        """Add a token if it may stand next; else close the walk. Returns whether it was added."""
        if not self.is_open or token_id in self.end_ids:
            self.is_open = False
            return False
        if self.masks is not None:
            if not bool(self.masks[-1][token_id]) or self._matcher is None:
                self.is_open = False
                return False
            if self._matcher is self.seq.matcher:
                self._matcher = self._matcher.fork()
            self._matcher.advance(token_id)
            mask = self._mask_after(self.token_ids + [token_id]) if self._matcher.error is None else None
            if mask is None:
                self.is_open = False
                return False
            self.masks.append(mask)
        self.token_ids.append(token_id)
        return True

    def extend(self, token_ids: list[int]) -> None:
        for token_id in token_ids:
            if not self.push(token_id):
                return

    def _mask_after(self, draft_ids: list[int]) -> torch.Tensor | None:
        """The mask the plain step would use after `draft_ids`, or None where it allows nothing."""
        matcher = self._matcher
        if matcher is None:
            return None
        prefix = self.seq.token_ids + draft_ids
        is_closing = self.params.runaway_guard and ends_in_loop(prefix, self.seq.num_prompt_tokens)
        remaining = self.budget - len(draft_ids)
        mask = closing_mask(matcher, remaining) if is_closing else matcher.mask(max_remaining_tokens=remaining)
        if matcher.error is not None or mask.dim() != 1 or mask.numel() == 0 or not bool(mask.any()):
            return None
        return mask

    def draft(self) -> Draft | None:
        if not self.token_ids:
            return None
        probs = torch.stack(self.modelled_probs) if self.modelled_probs else None
        return Draft(
            token_ids=self.token_ids,
            masks=self.masks,
            num_forced=self.num_forced,
            num_modelled=self.num_modelled,
            probs=probs,
        )


class Speculator:
    """Proposes, checks and verifies drafts for the engine (see the module docstring).

    Args:
        config: the draft sources and lengths.
        tokenizer: encodes forced text.
        eos_token_ids: tokens a draft never contains unless the request ignores EOS (the plain step
            decides where a text ends).
        draft_model: the model that drafts after forced and looked-up text (see `draft_model_for`).
    """

    def __init__(
        self,
        config: SpeculativeConfig,
        tokenizer: Tokenizer,
        eos_token_ids: frozenset[int],
        draft_model: DraftModel | None = None,
    ) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.draft_model = draft_model
        self._eos_token_ids = eos_token_ids

    # Proposing

    def propose(self, seq: Sequence, params: SamplingParams, budget: int) -> Draft | None:
        """A checked draft for `seq`'s next step, or None (see `propose_batch`)."""
        return self.propose_batch([(seq, params, budget)]).get(seq.seq_id)

    def propose_batch(self, candidates: list[tuple[Sequence, SamplingParams, int]]) -> dict[int, Draft]:
        """Checked drafts of a decode step's sequences, by sequence id (those without one left out).

        Args:
            candidates: (sequence, its request's parameters, budget) triples: each sequence decoding
                (its last token not yet cached); the budget counts the tokens it may still produce,
                the next one included (the draft leaves room for one more).
        """
        walks: list[_Walk] = []
        modelled: list[tuple[_Walk, int]] = []
        for seq, params, budget in candidates:
            num_wanted = min(self.config.num_draft_tokens, budget - 1)
            if num_wanted < 1 or params.use_beam_search:
                continue
            walk = _Walk(seq, params, budget, self._eos_token_ids)
            walks.append(walk)
            if self.config.jump_forward and seq.matcher is not None:
                walk.extend(self._forced_token_ids(seq.matcher)[:num_wanted])
                walk.num_forced = len(walk.token_ids)
            num_left = num_wanted - len(walk.token_ids)
            if self.config.prompt_lookup and walk.is_open and num_left > 0:
                allowance = seq.draft_allowance if seq.draft_allowance is not None else self.config.num_draft_tokens
                min_ngram = self.config.max_ngram if self.draft_model is not None else 1
                lookup = self._lookup(seq.token_ids + walk.token_ids, min(num_left, allowance), min_ngram)
                walk.extend(lookup)
                num_left -= len(lookup)
                if lookup:
                    continue
            if self.draft_model is not None and walk.is_open and num_left > 0:
                modelled.append((walk, min(num_left, self.draft_model.allowance(seq))))
        if modelled:
            with torch.inference_mode():  # the draft runner returns inference tensors, edited in place
                self._draft_with_model(modelled)
        drafts = {walk.seq.seq_id: walk.draft() for walk in walks}
        return {seq_id: draft for seq_id, draft in drafts.items() if draft is not None}

    def _lookup(self, token_ids: list[int], num_tokens: int, min_ngram: int) -> list[int]:
        """The tokens after the latest earlier occurrence of the longest suffix (max_ngram down to
        min_ngram) that occurred before."""
        tokens = np.asarray(token_ids, dtype=np.int64)
        for n in range(min(self.config.max_ngram, len(tokens) - 1), min_ngram - 1, -1):
            windows = np.lib.stride_tricks.sliding_window_view(tokens[:-1], n)  # [L - n, n]
            starts = np.flatnonzero((windows == tokens[-n:]).all(axis=1))
            if starts.size:
                follow = int(starts[-1]) + n
                return tokens[follow : follow + num_tokens].tolist()
        return []

    def _forced_token_ids(self, matcher: TokenMatcher) -> list[int]:
        """The text the constraint forces next (`matcher.forced_bytes()`), encoded as the model would
        write it on its own. Only whole characters are drafted: bytes past the last complete UTF-8
        character (forced text ending mid-character, or cut at `MAX_FORCED_BYTES`) and from the first
        invalid byte on are left to the plain step."""
        data = matcher.forced_bytes()[:MAX_FORCED_BYTES]
        try:
            text = codecs.getincrementaldecoder("utf-8")().decode(data, final=False)
        except UnicodeDecodeError as exc:
            text = data[: exc.start].decode("utf-8")
        return self.tokenizer.encode(text, parse_special_tokens=False) if text else []

    def _draft_with_model(self, modelled: list[tuple[_Walk, int]]) -> None:
        """Extend each walk by up to its count of draft-model tokens, one batched draft pass per token."""
        if self.draft_model is None:
            return
        goals = {id(walk): len(walk.token_ids) + num_tokens for walk, num_tokens in modelled}
        active = [walk for walk, _ in modelled]
        while active:
            contexts = [(walk.seq, walk.seq.token_ids + walk.token_ids) for walk in active]
            logits, rows = self.draft_model.next_logits(contexts)  # [R, V]
            if logits is None:
                return
            active = [active[row] for row in rows]
            for walk, row_logits in zip(active, logits):
                self._draft_one(walk, row_logits)
            active = [walk for walk in active if walk.is_open and len(walk.token_ids) < goals[id(walk)]]

    def _draft_one(self, walk: _Walk, logits: torch.Tensor) -> None:
        """Pick the next draft token from the draft's logits (float32 [V], edited in place) under the
        walk's mask and its request's processing; q = 0 for end tokens, so the draft never ends a text."""
        if walk.mask is not None:
            logits.masked_fill_(~walk.mask, -torch.inf)
        end_ids = [token_id for token_id in walk.end_ids if token_id < logits.shape[0]]
        if end_ids:
            logits[end_ids] = -torch.inf
        row = logits[None]  # [1, V]
        params = walk.params
        if params.has_penalties:
            apply_token_penalties(row, [walk.seq.token_ids + walk.token_ids], [walk.seq.num_prompt_tokens], [params])
        best = int(argmax_rows(row)[0])
        if float(logits[best]) == -torch.inf:
            walk.is_open = False  # the draft's vocabulary has no token the mask allows
            return
        if params.is_greedy:
            token_id = best
            probs = None
        else:
            probs = sampling_probs(row, [params])[0]  # [V]
            token_id = int(sample_from_probs(probs[None], [walk.seq.generator])[0])
        if walk.push(token_id):
            walk.num_modelled += 1
            if probs is not None:
                walk.modelled_probs.append(probs)

    # Verifying

    def verify(
        self, logits: torch.Tensor, seq: Sequence, params: SamplingParams, draft: Draft
    ) -> tuple[list[int], torch.Tensor]:
        """The tokens this step produces for `seq`: the accepted draft tokens, then one token of the target.

        Args:
            logits: float32 [k + 1, V]: row i scores the position after `seq.token_ids + draft[:i]`;
                modified in place (masks and penalties).
            seq: the sequence, its tokens without the draft.
            params: its request's parameters.
            draft: the checked draft.

        Returns:
            (token ids, 1..k + 1 of them; the processed logits rows of those positions, for logprobs).
        """
        draft_ids = draft.token_ids
        if draft.masks is not None:
            logits.masked_fill_(~torch.stack(draft.masks), -torch.inf)
        if params.has_penalties:
            prefixes = [seq.token_ids + draft_ids[:index] for index in range(len(draft_ids) + 1)]
            rows = len(prefixes)
            apply_token_penalties(logits, prefixes, [seq.num_prompt_tokens] * rows, [params] * rows)
        if params.is_greedy:
            targets = argmax_rows(logits).tolist()
            num_accepted = next((i for i, x in enumerate(draft_ids) if targets[i] != x), len(draft_ids))
            token_ids = draft_ids[:num_accepted] + [targets[num_accepted]]
        else:
            token_ids = _accept_sampled(sampling_probs(logits, [params] * logits.shape[0]), seq, draft)
            num_accepted = len(token_ids) - 1
        seq.num_draft_tokens += len(draft_ids)
        seq.num_accepted_draft_tokens += num_accepted
        self._adapt(seq, draft, num_accepted)
        return token_ids, logits[: len(token_ids)]

    def _adapt(self, seq: Sequence, draft: Draft, num_accepted: int) -> None:
        """Adapt the allowance of the source that drafted after the forced text: grown after a whole
        acceptance, cut to one past what was accepted of its part after a rejection there (a rejected
        forced token leaves it alone)."""
        num_sourced = len(draft.token_ids) - draft.num_forced
        num_accepted_sourced = num_accepted - draft.num_forced
        if num_sourced == 0 or num_accepted_sourced < 0:
            return
        maximum = self.config.num_draft_tokens
        if draft.num_modelled and self.draft_model is not None:
            allowance = self.draft_model.allowance(seq)
            self.draft_model.set_allowance(seq, _next_allowance(allowance, num_sourced, num_accepted_sourced, maximum))
        elif not draft.num_modelled:
            allowance = seq.draft_allowance if seq.draft_allowance is not None else maximum
            seq.draft_allowance = _next_allowance(allowance, num_sourced, num_accepted_sourced, maximum)

    def release_finished(self) -> None:
        """Free the draft model's KV of finished sequences (call from the stepping thread only)."""
        if self.draft_model is not None:
            self.draft_model.release_finished()


def _next_allowance(allowance: int, num_drafted: int, num_accepted: int, maximum: int) -> int:
    return min(maximum, allowance * 2) if num_accepted == num_drafted else num_accepted + 1


def _accept_sampled(probs: torch.Tensor, seq: Sequence, draft: Draft) -> list[int]:
    """Speculative sampling: probs is [k + 1, V], each row the processed target distribution p at that
    position; a draft token x drawn from q is kept with probability min(1, p(x) / q(x)), else the
    position is drawn from max(0, p - q) (q one-hot for deterministic tokens: p with x removed)."""
    generator = seq.generator
    draft_ids = draft.token_ids
    for index, token_id in enumerate(draft_ids):
        q = draft.draft_probs(index)
        q_of_token = 1.0 if q is None else float(q[token_id])
        if float(torch.rand((), generator=generator)) * q_of_token < float(probs[index, token_id]):
            continue
        if q is None:
            residual = probs[index].clone()
            residual[token_id] = 0.0
        else:
            residual = (probs[index] - q).clamp_(min=0.0)
        if not bool(residual.any()):
            continue  # p <= q everywhere, so p == q up to rounding: x is accepted
        return draft_ids[:index] + [int(sample_from_probs(residual[None], [generator])[0])]
    return draft_ids + [int(sample_from_probs(probs[-1:], [generator])[0])]
