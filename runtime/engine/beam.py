"""Beam search on the paged KV cache.

Each step scores every (beam, token) continuation by cumulative logprob (after the grammar mask and
penalties), keeps the `num_beams` best that do not end, and sets aside ending ones (EOS or a stop
token) as finished hypotheses ranked by `cumulative_logprob / length ** length_penalty`. Beams that
are kept by several continuations fork: the children share the parent's KV blocks, and the block
manager copies a shared block only when a child writes into it. Beams no continuation kept are freed
at once. Search ends, as in Hugging Face's default (`early_stopping=False`), when `num_beams`
hypotheses exist and the best live beam cannot beat the worst of them, or at `max_tokens`.

Constraints work unchanged: every beam has its own matcher (forked with the beam), so the mask keeps
each beam inside the language and EOS scores only where that beam's matcher accepts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Set
from dataclasses import dataclass, field

import torch

from grammars.errors import GrammarError, StencilError
from runtime.engine.sequence import FinishReason, Request, Sequence, TokenLogprob
from runtime.errors import EngineError


@dataclass(frozen=True)
class BeamHypothesis:
    """A finished beam.

    Attributes:
        score: cumulative logprob normalized by length ** length_penalty.
        token_ids: its completion tokens (a final EOS or stop token included).
        cumulative_logprob: sum of its tokens' logprobs.
        logprobs: per token, when the request asked for logprobs.
        finish_reason: "stop" (ended by EOS or a stop token) or "length".
    """

    score: float
    token_ids: tuple[int, ...]
    cumulative_logprob: float
    logprobs: tuple[TokenLogprob, ...] | None
    finish_reason: FinishReason


@dataclass
class BeamState:
    """A beam request's finished hypotheses (best first, at most `num_beams`) and why it may have failed."""

    num_beams: int
    length_penalty: float
    hypotheses: list[BeamHypothesis] = field(default_factory=list)
    error: StencilError | None = None

    def score(self, cumulative_logprob: float, num_tokens: int) -> float:
        """A beam's rank: its cumulative logprob normalized by length ** length_penalty."""
        return cumulative_logprob / (num_tokens**self.length_penalty)

    def add(self, seq: Sequence, finish_reason: FinishReason) -> None:
        """Record `seq`'s completion as a hypothesis, keeping only the best `num_beams`."""
        hypothesis = BeamHypothesis(
            score=self.score(seq.cumulative_logprob, seq.num_completion_tokens),
            token_ids=tuple(seq.completion_token_ids),
            cumulative_logprob=seq.cumulative_logprob,
            logprobs=tuple(seq.logprobs) if seq.logprobs is not None else None,
            finish_reason=finish_reason,
        )
        self.hypotheses.append(hypothesis)
        self.hypotheses.sort(key=lambda h: h.score, reverse=True)
        del self.hypotheses[self.num_beams :]

    def cannot_improve(self, best_cumulative_logprob: float, num_tokens: int) -> bool:
        """Whether a live beam with this cumulative logprob and length can no longer make the top beams."""
        if len(self.hypotheses) < self.num_beams:
            return False
        return self.hypotheses[-1].score >= self.score(best_cumulative_logprob, num_tokens)


def beam_state_of(request: Request) -> BeamState:
    """The bookkeeping of a beam request (the engine sets it when `num_beams > 1`).

    Raises:
        EngineError: `request` is not a beam request (an engine bug).
    """
    if request.beam_state is None:
        raise EngineError(f"request {request.request_id!r} has no beam state")
    return request.beam_state


@dataclass(frozen=True)
class _Candidate:
    parent: int
    token_id: int
    cumulative_logprob: float
    logprob: TokenLogprob


class BeamSearch:
    """Advances beam requests one step at a time; owns no state beyond the callbacks into the engine.

    Args:
        fork_seq: makes a child of a live beam that shares its blocks (and registers it with the engine).
        drop_seq: frees a beam's blocks and forgets it (leaving `request.seqs` to the caller).
        max_model_len: the context window; beams reaching it end with "length".
    """

    def __init__(
        self,
        *,
        fork_seq: Callable[[Request, Sequence], Sequence],
        drop_seq: Callable[[Request, Sequence], None],
        max_model_len: int,
    ) -> None:
        self._fork_seq = fork_seq
        self._drop_seq = drop_seq
        self.max_model_len = max_model_len

    def step(self, request: Request, logits: torch.Tensor, is_alive: list[bool], stop_token_ids: Set[int]) -> bool:
        """Extend `request`'s beams by one token each.

        Args:
            request: a beam request whose live beams (`request.seqs`) all have logits this step.
            logits: float32 [W, V], one row per live beam, after masks and penalties.
            is_alive: per beam, False where its constraint cannot go on (its row is ignored).
            stop_token_ids: ids that end a beam (EOS unless ignored, plus the request's stop tokens).

        Returns:
            Whether the search is over; then every live beam has been dropped and the outputs are
            `request.beam_state.hypotheses` (or `beam_state.error` when no beam survived).
        """
        state = beam_state_of(request)
        for seq, alive in zip(request.seqs, is_alive):
            if not alive and state.error is None:
                state.error = seq.matcher.error if seq.matcher is not None else None
        candidates = self._continuations(request, logits, is_alive, stop_token_ids)
        if candidates:
            num_tokens = request.seqs[candidates[0].parent].num_completion_tokens + 1
            is_done = state.cannot_improve(candidates[0].cumulative_logprob, num_tokens)
        else:
            is_done = True
        if not is_done:
            self._advance(request, candidates)
            is_done = not request.seqs
            if request.seqs and self._reached_length_limit(request, request.seqs[0]):
                for seq in request.seqs:
                    state.add(seq, FinishReason.LENGTH)
                is_done = True
        if is_done:
            for seq in request.seqs:
                self._drop_seq(request, seq)
            request.seqs = []
            if not state.hypotheses and state.error is None:
                state.error = GrammarError("no beam could continue under the constraint")
        return is_done

    def _reached_length_limit(self, request: Request, seq: Sequence) -> bool:
        return seq.num_completion_tokens >= request.params.max_tokens or seq.num_tokens >= self.max_model_len

    def _continuations(
        self, request: Request, logits: torch.Tensor, is_alive: list[bool], stop_token_ids: Set[int]
    ) -> list[_Candidate]:
        """The best continuing candidates (at most num_beams); ending ones go to the hypotheses."""
        state = beam_state_of(request)
        num_beams = request.params.num_beams
        num_top = request.params.logprobs
        # float64: scores are sums over many steps, and close beams must rank the same way every run.
        logprobs = logits.double().log_softmax(dim=-1)  # [W, V]
        logprobs[~torch.tensor(is_alive)] = -math.inf
        cumulative = torch.tensor([seq.cumulative_logprob for seq in request.seqs], dtype=torch.float64)  # [W]
        cumulative = cumulative.unsqueeze(1)  # [W, 1]
        vocab_size = logprobs.shape[1]
        scores, flat_ids = (logprobs + cumulative).view(-1).topk(min(2 * num_beams, logprobs.numel()))
        candidates: list[_Candidate] = []
        for rank, (score, flat_id) in enumerate(zip(scores.tolist(), flat_ids.tolist())):
            if score == -math.inf or len(candidates) == num_beams:
                break
            parent, token_id = divmod(flat_id, vocab_size)
            top: tuple[tuple[int, float], ...] = ()
            if num_top:
                top_values, top_ids = logprobs[parent].topk(num_top)
                top = tuple(zip(top_ids.tolist(), top_values.tolist()))
            logprob = TokenLogprob(token_id=token_id, logprob=logprobs[parent, token_id].item(), top_logprobs=top)
            if token_id in stop_token_ids:
                # As in Hugging Face: an ending candidate counts only if it ranks among the top num_beams.
                if rank < num_beams:
                    state.add(_extended(request.seqs[parent], logprob, score), FinishReason.STOP)
                continue
            candidates.append(_Candidate(parent, token_id, score, logprob))
        return candidates

    def _advance(self, request: Request, candidates: list[_Candidate]) -> None:
        """Replace the live beams by the candidates: reuse, fork or drop each parent."""
        parents = list(request.seqs)
        num_children = [0] * len(parents)
        for candidate in candidates:
            num_children[candidate.parent] += 1
        for parent, count in zip(parents, num_children):
            if count == 0:
                self._drop_seq(request, parent)
        # Forks copy a parent before its own continuation is appended.
        spare_forks = {
            index: [self._fork_seq(request, parents[index]) for _ in range(count - 1)]
            for index, count in enumerate(num_children)
            if count > 1
        }
        is_parent_taken = [False] * len(parents)
        new_beams: list[Sequence] = []
        for candidate in candidates:
            if is_parent_taken[candidate.parent]:
                seq = spare_forks[candidate.parent].pop()
            else:
                seq = parents[candidate.parent]
                is_parent_taken[candidate.parent] = True
            seq.append_token(candidate.token_id)
            seq.cumulative_logprob = candidate.cumulative_logprob
            if seq.logprobs is not None:
                seq.logprobs.append(candidate.logprob)
            error = _advance_matcher(seq, candidate.token_id)
            if error is not None:
                beam_state_of(request).error = error
                self._drop_seq(request, seq)
                continue
            new_beams.append(seq)
        request.seqs = new_beams


def _extended(seq: Sequence, logprob: TokenLogprob, cumulative_logprob: float) -> Sequence:
    """A detached view of `seq` with one more token, for recording an ending hypothesis."""
    return Sequence(
        seq_id=seq.seq_id,
        token_ids=[*seq.token_ids, logprob.token_id],
        num_prompt_tokens=seq.num_prompt_tokens,
        cumulative_logprob=cumulative_logprob,
        logprobs=[*seq.logprobs, logprob] if seq.logprobs is not None else None,
    )


def _advance_matcher(seq: Sequence, token_id: int) -> GrammarError | None:
    """Advance the beam's matcher; the error instead of raising, since one beam failing ends only it."""
    if seq.matcher is None:
        return None
    try:
        seq.matcher.advance(token_id)
    except GrammarError as exc:
        return exc
    return None
