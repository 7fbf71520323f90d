"""Speculative decoding and jump-forward: drafts proposed, checked against the constraint, verified in one pass.

Jump-forward is speculation with the grammar as the draft source. Each decode step a sequence may
carry a draft of up to `num_draft_tokens` tokens from:

- the constraint (`jump_forward`): the bytes it forces next (`{"name": "`, a closing `"}`, an enum
  tail), encoded by the tokenizer as the model would write them;
- prompt lookup (`prompt_lookup`): the tokens that followed the latest earlier occurrence of the
  sequence's last 1..`max_ngram` tokens, in the prompt or the output so far (extraction copies spans).

Before the forward pass the draft is walked through a fork of the sequence's matcher: each position's
mask (the one the plain step would use there: its budget, the runaway guard's closing mask) is kept,
and a token the mask forbids ends the draft. The target then scores the last token and the draft in
one (k+1)-token forward; position i's logits go through that position's mask and the request's
penalties, temperature and truncation, exactly as a plain step's would. Acceptance (a draft is a
deterministic function of the context, so the rule is the one-hot case of speculative sampling):

    greedy:  accept draft token x while x is the argmax; the first argmax that differs is the output;
    sampled: accept x with probability p(x); on rejection draw from p with x removed, renormalized;
    after k acceptances one more token is drawn from the last position (the bonus token).

So greedy output is the plain output token for token and sampled output has the plain distribution,
given the same logits. A verification row is not bit-identical to the one-token decode step of that
position (measured on SmolLM2, differences of 1-2 ulp that pass down the layers): CPU matmuls
round a row differently by row count (float32: MKL's one-row GEMV vs GEMM; bfloat16: oneDNN's one-row
path vs GEMM at 1536 inputs; int4: the compiled one-row kernel vs torch's kernel for 2-8 rows vs dense
weights past 8), and attention over a batch padded to the longest context rounds differently from
attention over the exact one. Attending each row alone removes the latter only, at ~25% of a
7-token verification pass, so it is not done. Plain decoding is no more invariant (its batch decides
its row count and padding). The guarantee is hence: greedy outputs equal plain ones wherever no
near-tie flips under rounding (float32: all prompts tested; bfloat16: most), and sampling is
distribution-exact up to floating-point rounding.
The engine then appends the accepted tokens through the normal path (matcher, detokenizer, stop
strings, limits), keeps the KV of the accepted positions and frees the blocks past them; the real
matcher never saw the rejected tokens (the walk used a fork). Off for beam search.

Adaptive length: a sequence's lookup allowance doubles (to `num_draft_tokens`) while its drafts are
accepted whole and drops to one past the accepted count when they are not; forced text is
always proposed (it is almost always accepted).
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from runtime.engine.runaway import closing_mask, ends_in_loop
from runtime.engine.sampler import apply_token_penalties, argmax_rows, sample_from_probs, sampling_probs
from runtime.errors import RequestError

if TYPE_CHECKING:
    from runtime.engine.constraints import TokenMatcher
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

    Raises:
        RequestError: a value out of range, or no draft source (field names it).
    """

    num_draft_tokens: int = 6
    jump_forward: bool = True
    prompt_lookup: bool = True
    max_ngram: int = 3

    def __post_init__(self) -> None:
        for name in ("num_draft_tokens", "max_ngram"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise RequestError(f"must be an int >= 1, got {value!r}", name)
        if not (self.jump_forward or self.prompt_lookup):
            raise RequestError("needs at least one draft source", "speculative")


@dataclass
class Draft:
    """A checked draft of one sequence.

    Attributes:
        token_ids: the draft tokens (k >= 1), each allowed by the constraint where it stands.
        masks: k + 1 masks (bool [V]) for positions 0..k, or None for an unconstrained sequence.
        num_forced: how many leading tokens came from forced text.
    """

    token_ids: list[int]
    masks: list[torch.Tensor] | None
    num_forced: int


class Speculator:
    """Proposes, checks and verifies drafts for the engine (see the module docstring).

    Args:
        config: the draft sources and lengths.
        tokenizer: encodes forced text.
        eos_token_ids: tokens a draft never contains (the plain step decides where a text ends).
    """

    def __init__(self, config: SpeculativeConfig, tokenizer: Tokenizer, eos_token_ids: frozenset[int]) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self._eos_token_ids = eos_token_ids

    # Proposing

    def propose(self, seq: Sequence, params: SamplingParams, budget: int) -> Draft | None:
        """A checked draft for `seq`'s next step, or None.

        Args:
            seq: a decoding sequence (its last token not yet cached).
            params: its request's parameters.
            budget: tokens it may still produce, the next one included (the draft leaves room for one more).
        """
        num_wanted = min(self.config.num_draft_tokens, budget - 1)
        if num_wanted < 1 or params.use_beam_search:
            return None
        forced: list[int] = []
        if self.config.jump_forward and seq.matcher is not None:
            forced = self._forced_token_ids(seq.matcher)[:num_wanted]
        token_ids = forced
        allowance = seq.draft_allowance if seq.draft_allowance is not None else self.config.num_draft_tokens
        num_lookup = min(num_wanted - len(forced), allowance)
        if self.config.prompt_lookup and num_lookup > 0:
            token_ids = forced + self._lookup(seq.token_ids + forced, num_lookup)
        for index, token_id in enumerate(token_ids):
            if token_id in self._eos_token_ids or token_id in params.stop_token_ids:
                token_ids = token_ids[:index]
                break
        return self._check(seq, params, budget, token_ids, len(forced))

    def _lookup(self, token_ids: list[int], num_tokens: int) -> list[int]:
        """The tokens after the latest earlier occurrence of the longest suffix (max_ngram down to 1)
        that occurred before."""
        tokens = np.asarray(token_ids, dtype=np.int64)
        for n in range(min(self.config.max_ngram, len(tokens) - 1), 0, -1):
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

    # Checking against the constraint

    def _check(
        self, seq: Sequence, params: SamplingParams, budget: int, token_ids: list[int], num_forced: int
    ) -> Draft | None:
        """Walk the draft through a fork of `seq`'s matcher, keeping each position's mask; the draft ends
        before the first token its mask forbids, and before a position whose mask allows nothing."""
        if not token_ids:
            return None
        matcher = seq.matcher
        if matcher is None:
            return Draft(token_ids=token_ids, masks=None, num_forced=num_forced)
        masks: list[torch.Tensor] = []
        walker = matcher
        for index in range(len(token_ids) + 1):
            prefix = seq.token_ids + token_ids[:index]
            is_closing = params.runaway_guard and ends_in_loop(prefix, seq.num_prompt_tokens)
            remaining = budget - index
            mask = closing_mask(walker, remaining) if is_closing else walker.mask(max_remaining_tokens=remaining)
            if walker.error is not None or mask.dim() != 1 or mask.numel() == 0 or not bool(mask.any()):
                break
            masks.append(mask)
            if index == len(token_ids) or not bool(mask[token_ids[index]]):
                break
            if walker is matcher:
                walker = matcher.fork()
            walker.advance(token_ids[index])
            if walker.error is not None:
                break
        num_kept = len(masks) - 1
        if num_kept < 1:
            return None
        return Draft(token_ids=token_ids[:num_kept], masks=masks, num_forced=min(num_forced, num_kept))

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
            token_ids = self._accept_sampled(sampling_probs(logits, [params] * logits.shape[0]), seq, draft_ids)
            num_accepted = len(token_ids) - 1
        seq.num_draft_tokens += len(draft_ids)
        seq.num_accepted_draft_tokens += num_accepted
        self._adapt(seq, draft, num_accepted)
        return token_ids, logits[: len(token_ids)]

    def _adapt(self, seq: Sequence, draft: Draft, num_accepted: int) -> None:
        """Grow the lookup allowance after a whole acceptance, shrink it to one past what was accepted of
        the looked-up part after a rejection there (a rejected forced token leaves it alone)."""
        allowance = seq.draft_allowance if seq.draft_allowance is not None else self.config.num_draft_tokens
        if num_accepted == len(draft.token_ids):
            seq.draft_allowance = min(self.config.num_draft_tokens, allowance * 2)
        elif num_accepted >= draft.num_forced:
            seq.draft_allowance = num_accepted - draft.num_forced + 1

    @staticmethod
    def _accept_sampled(probs: torch.Tensor, seq: Sequence, draft_ids: list[int]) -> list[int]:
        """Rejection sampling of a deterministic draft: probs is [k + 1, V], each row the processed
        target distribution at that position."""
        generator = seq.generator
        for index, token_id in enumerate(draft_ids):
            if float(torch.rand((), generator=generator)) < float(probs[index, token_id]):
                continue
            residual = probs[index].clone()
            residual[token_id] = 0.0
            if not bool(residual.any()):
                continue  # p(x) is 1 up to rounding: x is the only token left
            return draft_ids[:index] + [int(sample_from_probs(residual[None], [generator])[0])]
        return draft_ids + [int(sample_from_probs(probs[-1:], [generator])[0])]
