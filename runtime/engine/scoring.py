"""Scoring: the log-probability the model gives each of K continuations of one prompt.

Ranking a closed set of answers by their whole-sequence likelihood, rather than committing to one
token at a time, is what evaluation harnesses do: token-by-token decoding favours an option whose
first token is likely even when the rest of it is not (prefix bias).

The prompt is prefilled once, all but its last token, reusing prefix-cached blocks; the K
continuations then fork its blocks and run together in one forward pass, each feeding the prompt's
last token and its own tokens but the last, so that logits row j of a continuation predicts its
token j. Scores are the plain log-softmax of the model's logits: no constraint mask, no penalty.
The blocks come from the engine's block manager and go back before returning; the caller holds the
engine's step lock (no `step` runs meanwhile) and this module takes its state lock around each
block-manager call.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

from runtime.engine.sequence import Sequence
from runtime.errors import CacheBusyError
from runtime.model.runner import ForwardBatch

if TYPE_CHECKING:
    from runtime.engine.block_manager import BlockManager
    from runtime.model.runner import ModelRunner

__all__ = ["continuation_logprobs", "num_blocks_to_score", "score_continuations"]


def num_blocks_to_score(block_manager: BlockManager, num_prompt_tokens: int, continuation_lens: list[int]) -> int:
    """Most KV blocks `score_continuations` holds at once: the prompt's, plus per continuation a copy
    of the prompt's last block and blocks for its own tokens."""
    tails = sum(block_manager.num_blocks_for(length) + 1 for length in continuation_lens)
    return block_manager.num_blocks_for(num_prompt_tokens) + tails


def score_continuations(
    runner: ModelRunner,
    block_manager: BlockManager,
    state_lock: threading.Lock,
    seq_ids: Iterator[int],
    prompt_ids: list[int],
    continuations: list[list[int]],
) -> list[float]:
    """Sum of log-probabilities of each continuation's tokens after `prompt_ids`.

    Args:
        runner: the engine's model runner (the caller holds the engine's step lock).
        block_manager: the engine's block manager, only touched under `state_lock`.
        state_lock: the engine's state lock.
        seq_ids: the engine's sequence-id counter.
        prompt_ids: the prompt, at least one token (already checked against the context window).
        continuations: non-empty token lists (already checked).

    Returns:
        One log-probability per continuation, in order.

    Raises:
        CacheBusyError: the block pool is too busy with running requests to hold the scoring now.
    """
    base = Sequence(seq_id=next(seq_ids), token_ids=list(prompt_ids), num_prompt_tokens=len(prompt_ids))
    branches: list[Sequence] = []
    with state_lock:
        if not block_manager.can_allocate(base):
            raise CacheBusyError("not enough free KV blocks to score the options now; retry when fewer requests run")
        block_manager.allocate(base)
    try:
        num_shared = len(prompt_ids) - 1
        if base.num_cached < num_shared:
            prefill = ForwardBatch(
                token_ids=[prompt_ids[base.num_cached : num_shared]],
                num_cached=[base.num_cached],
                block_tables=[base.block_table],
                is_prefill=True,
            )
            runner.forward(prefill)
            base.num_cached = num_shared
        with state_lock:
            block_manager.cache_full_blocks(base)
            for continuation in continuations:
                branch = Sequence(
                    seq_id=next(seq_ids), token_ids=[*prompt_ids, *continuation[:-1]], num_prompt_tokens=len(prompt_ids)
                )
                block_manager.fork(base, branch)
                branches.append(branch)
            block_manager.free(base)  # the last branch to write the shared tail block then needs no copy
            if block_manager.num_blocks_needed_to_append(branches) > block_manager.num_free_blocks:
                raise CacheBusyError(
                    "not enough free KV blocks to score the options now; retry when fewer requests run"
                )
            copy_pairs = [pair for branch in branches for pair in block_manager.append(branch)]
        if copy_pairs:
            runner.copy_blocks(copy_pairs)
        batch = ForwardBatch(
            token_ids=[branch.token_ids[num_shared:] for branch in branches],
            num_cached=[num_shared] * len(branches),
            block_tables=[branch.block_table for branch in branches],
            all_logits=True,
            is_prefill=True,
        )
        logits = runner.forward(batch)  # [sum len(continuation), V]
    finally:
        with state_lock:
            for seq in (base, *branches):
                block_manager.free(seq)
    return continuation_logprobs(logits, continuations)


def continuation_logprobs(logits: torch.Tensor, continuations: list[list[int]]) -> list[float]:
    """Per continuation, the sum over its tokens of log-softmax(logits row) at that token; rows are
    the continuations' positions, one after another."""
    targets = torch.tensor([token_id for tokens in continuations for token_id in tokens], device=logits.device)
    picked = torch.log_softmax(logits.float(), dim=-1).gather(1, targets[:, None])[:, 0]  # [sum len]
    return [float(part.sum()) for part in picked.split([len(tokens) for tokens in continuations])]
