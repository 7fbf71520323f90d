"""A draft: its tokens, each checked against the sequence's constraint where it stands (`DraftWalk`,
walked through a fork of the matcher), and the masks verification applies (`Draft`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from runtime.engine.runaway import MAX_PERIOD, closing_mask, ends_in_loop

if TYPE_CHECKING:
    from runtime.engine.sampling_params import SamplingParams
    from runtime.engine.sequence import Sequence


@dataclass
class Draft:
    """A checked draft of one sequence: forced, looked-up and modelled tokens.

    Attributes:
        token_ids: the draft tokens (k >= 1), each allowed by the constraint where it stands.
        masks: k + 1 masks (bool [V]) for positions 0..k, or None for an unconstrained sequence.
        kinds: where each token came from (`DraftKind`), to learn how often each kind is accepted.
        confidence: how sure the target was of the token before the draft (`confidence_level`).
        num_modelled: how many trailing tokens came from the draft model.
        probs: float32 [num_modelled, V]: the distribution q each modelled token was sampled from;
            None when every token is a deterministic function of the context (q one-hot).
        alternatives: (position, kind, token id) of the tokens weighed against the drafted one there
            and not drafted; verification tells whether each would have been accepted, so the kinds
            not chosen keep learning.
    """

    token_ids: list[int]
    masks: list[torch.Tensor] | None
    kinds: list[str]
    confidence: str = "unknown"
    num_modelled: int = 0
    probs: torch.Tensor | None = None
    alternatives: list[tuple[int, str, int]] = field(default_factory=list)

    def draft_probs(self, index: int) -> torch.Tensor | None:
        """q at draft position `index` (float32 [V]), None where it is one-hot."""
        first_modelled = len(self.token_ids) - self.num_modelled
        if self.probs is None or index < first_modelled:
            return None
        return self.probs[index - first_modelled]


class DraftWalk:
    """A draft in the making: its tokens, walked through a fork of the sequence's matcher, and the mask
    at each position (k + 1 of them); closed at the first token that cannot join it."""

    def __init__(self, seq: Sequence, params: SamplingParams, budget: int, end_ids: frozenset[int]) -> None:
        self.seq, self.params, self.budget = seq, params, budget
        self.end_ids = (frozenset() if params.ignore_eos else end_ids) | frozenset(params.stop_token_ids)
        self.token_ids: list[int] = []
        self.kinds: list[str] = []
        self.alternatives: list[tuple[int, str, int]] = []
        self.confidence = "unknown"
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

    def forced_bytes(self) -> bytes:
        """The bytes the constraint forces after the draft so far (none for an unconstrained sequence)."""
        return self._matcher.forced_bytes() if self._matcher is not None and self.is_open else b""

    def forced_bytes_after(self, token_id: int) -> bytes:
        """The bytes the constraint would force after `token_id` (none where it may not stand next)."""
        if self._matcher is None or not self.allows(token_id):
            return b""
        probe = self._matcher.fork()
        probe.advance(token_id)
        return probe.forced_bytes() if probe.error is None else b""

    def allows(self, token_id: int) -> bool:
        """Whether `token_id` may stand next (the walk open, the mask allowing it, not an end token)."""
        if not self.is_open or token_id in self.end_ids:
            return False
        return self.masks is None or bool(self.masks[-1][token_id])

    def push(self, token_id: int, kind: str) -> bool:
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
        self.kinds.append(kind)
        return True

    def cut(self, length: int) -> None:
        """Keep the first `length` tokens and close the walk (its matcher stands past them)."""
        del self.token_ids[length:], self.kinds[length:]
        self.alternatives = [alternative for alternative in self.alternatives if alternative[0] < length]
        if self.masks is not None:
            del self.masks[length + 1 :]
        self.is_open = False

    def _mask_after(self, draft_ids: list[int]) -> torch.Tensor | None:
        """The mask the plain step would use after `draft_ids`, or None where the matcher failed
        (a mask that allows nothing is left to `push`, which it refuses, and `draft`)."""
        matcher = self._matcher
        if matcher is None:
            return None
        is_closing = self.params.runaway_guard and self._may_loop(draft_ids)
        if is_closing:
            is_closing = ends_in_loop(self.seq.token_ids + draft_ids, self.seq.num_prompt_tokens)
        remaining = self.budget - len(draft_ids)
        mask = closing_mask(matcher, remaining) if is_closing else matcher.mask(max_remaining_tokens=remaining)
        if matcher.error is not None or mask.dim() != 1 or mask.numel() == 0:
            return None
        return mask

    def _may_loop(self, draft_ids: list[int]) -> bool:
        """Whether the text after `draft_ids` may end in a loop (`ends_in_loop`): only if its last
        token recurs within the last `MAX_PERIOD` before it (a cheap test that rules most steps out)."""
        recent = self.seq.token_ids[-(MAX_PERIOD + 1) :] + draft_ids
        return recent[-1] in recent[-(MAX_PERIOD + 1) : -1]

    def draft(self) -> Draft | None:
        """The walk's draft, less trailing tokens after which the mask allows nothing (a mask a
        token was pushed through allows that token, so only the last one is checked: `any` over
        the vocabulary costs more than a draft token's other checks together; numpy's over the mask's
        memory, a tenth of torch's)."""
        while self.token_ids and self.masks is not None and not bool(self.masks[-1].numpy().any()):
            self.cut(len(self.token_ids) - 1)
        if not self.token_ids:
            return None
        probs = torch.stack(self.modelled_probs) if self.modelled_probs else None
        return Draft(
            token_ids=self.token_ids,
            masks=self.masks,
            kinds=self.kinds,
            num_modelled=self.num_modelled,
            probs=probs,
            alternatives=self.alternatives,
            confidence=self.confidence,
        )
