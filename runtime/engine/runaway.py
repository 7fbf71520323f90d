"""The runaway guard: a constrained generation caught in a loop is steered to close its value.

Small models decoding greedily fall into degenerate loops inside a constrained value: `1000000...`
in a number, one phrase over and over in a string, the same array item again and again. The grammar
allows every step of them, so the mask alone cannot end them: they run until the length-aware mask
closes the value at the last moment, having spent the whole budget on junk.

The policy (`SamplingParams.runaway_guard`, on by default; `runaway_guard=False` in the SDK):

- A loop is a completion whose last tokens are one block of `p` tokens repeated back to back
  (1 <= p <= MAX_PERIOD), covering at least MIN_LOOP_TOKENS tokens and MIN_REPEATS copies of the
  block: twelve `0` tokens, six copies of a two-token block, three copies of a longer one.
- While a constrained completion ends in a loop, its next token is chosen (greedy or sampled, as
  the request says) among the tokens of its matcher's `closing_mask`: those after which the
  shortest completion is shorter than it is now, and EOS where the text may end. A looping number
  ends, a looping string closes, a looping array closes, each in the model's preferred way among
  the tokens that do so. As soon as the completion no longer ends in a loop the plain mask is back.
- Exact: every token chosen is one the constraint allows, so every output is a sentence of it; a
  completion that never ends in a loop is chosen from the plain mask at every step, token for token
  what it is with the guard off. Free text (no constraint) is never guarded, and a matcher without a
  `closing_mask` keeps its plain mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from runtime.engine.constraints import TokenMatcher

#: Fewest tokens a loop covers before the guard acts.
MIN_LOOP_TOKENS = 12
#: Fewest copies of the repeated block.
MIN_REPEATS = 3
#: Longest repeated block, in tokens, the guard looks for (a repeated array item of a few fields).
MAX_PERIOD = 64


def ends_in_loop(token_ids: Sequence[int], start: int = 0) -> bool:
    """Whether `token_ids[start:]` ends in a loop: its last `max(MIN_LOOP_TOKENS, MIN_REPEATS * p)`
    tokens repeat one block of `p` tokens, for some p <= MAX_PERIOD.

    Cheap enough for every step: only the periods at which the last token recurs are checked, and
    each check stops at its first mismatch.
    """
    num_tokens = len(token_ids) - start
    if num_tokens < MIN_LOOP_TOKENS:
        return False
    last = token_ids[-1]
    for period in range(1, MAX_PERIOD + 1):
        span = max(MIN_LOOP_TOKENS, MIN_REPEATS * period)
        if span > num_tokens:
            return False  # spans only grow with the period
        if token_ids[-1 - period] != last:
            continue
        if all(token_ids[-i] == token_ids[-i - period] for i in range(2, span - period + 1)):
            return True
    return False


def closing_mask(
    matcher: TokenMatcher, max_remaining_tokens: int | None, max_seconds: float | None = None
) -> torch.Tensor:
    """The mask a looping sequence samples from: its matcher's `closing_mask(max_seconds,
    max_remaining_tokens)`, an optional method of a `TokenMatcher` (a wrapping matcher forwards it
    through this function), or its plain mask when it has none."""
    closing = getattr(matcher, "closing_mask", None)
    if closing is None:
        return matcher.mask(max_seconds, max_remaining_tokens)
    mask: torch.Tensor = closing(max_seconds, max_remaining_tokens)
    return mask
