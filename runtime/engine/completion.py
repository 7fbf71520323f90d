"""What sampled tokens become: the decision to end a sequence, its streamed text, the final outputs.

Kept apart from the engine's stepping so the rules read in one place:

- EOS (unless `ignore_eos`) or a stop token id ends a sequence with "stop"; the token stays in
  `token_ids` but adds no text. Under a constraint, EOS is an "error" unless the matcher accepts
  (the mask allows EOS only then, so this guards against a faulty matcher).
- Any other token advances the constraint matcher (a rejection ends the sequence with "error"), then
  the detokenizer; a stop string found in the text cuts the text where it starts and ends with "stop".
- `max_tokens` completion tokens or the context window end it with "length".
"""

from __future__ import annotations

from collections.abc import Set
from typing import TYPE_CHECKING

from grammars.errors import GrammarError, StencilError
from runtime.engine.beam import BeamState, beam_state_of
from runtime.engine.outputs import CompletionDelta, CompletionOutput, RequestOutput, Usage
from runtime.engine.sequence import FinishReason, Request, Sequence, TokenLogprob
from runtime.engine.stop import find_stop_string, num_held_back
from runtime.errors import EngineError

if TYPE_CHECKING:
    from runtime.engine.sampling_params import SamplingParams
    from runtime.tokenizer import DetokenizeStream, Tokenizer

#: Why a sequence ended: the reason and, for "error", what went wrong.
Ending = tuple[FinishReason, StencilError | None]


def accept_token(
    seq: Sequence,
    token_id: int,
    logprob: TokenLogprob | None,
    params: SamplingParams,
    *,
    eos_token_ids: Set[int],
    max_model_len: int,
) -> Ending | None:
    """Append a sampled token to `seq` and decide whether the sequence ends with it.

    Returns:
        None while the sequence goes on; else why it ended (the caller frees it).
    """
    seq.append_token(token_id)
    if logprob is not None and seq.logprobs is not None:  # given exactly when the request wants logprobs
        seq.logprobs.append(logprob)
        seq.cumulative_logprob += logprob.logprob
    is_eos = token_id in eos_token_ids and not params.ignore_eos
    if is_eos or token_id in params.stop_token_ids:
        seq.text += _detokenizer(seq).flush()  # bytes of a character the stop token cut short
        if is_eos and seq.matcher is not None and not seq.matcher.is_accepting():
            error = GrammarError(f"end of sequence (token {token_id}) before the constraint was satisfied")
            return FinishReason.ERROR, error
        return FinishReason.STOP, None
    if seq.matcher is not None:
        try:
            seq.matcher.advance(token_id)
        except GrammarError as exc:
            return FinishReason.ERROR, exc
    num_checked = len(seq.text)
    seq.text += _detokenizer(seq).push(token_id)
    if params.stop:
        stop_at = find_stop_string(seq.text, params.stop, num_checked)
        if stop_at is not None:
            seq.text = seq.text[:stop_at]
            return FinishReason.STOP, None
    if seq.num_completion_tokens >= params.max_tokens or seq.num_tokens >= max_model_len:
        seq.text += _detokenizer(seq).flush()
        return FinishReason.LENGTH, None
    return None


def _detokenizer(seq: Sequence) -> DetokenizeStream:
    """`seq`'s incremental decoder, which the engine sets before decoding.

    Raises:
        EngineError: none was set (an engine bug).
    """
    if seq.detokenizer is None:
        raise EngineError(f"sequence {seq.seq_id} has no detokenizer")
    return seq.detokenizer


def take_delta(seq: Sequence, stop: tuple[str, ...]) -> CompletionDelta:
    """The tokens and settled text `seq` gained since its last delta (text that may still begin a stop
    string waits, unless the sequence has ended)."""
    text_end = len(seq.text)
    if not seq.is_finished:
        text_end -= num_held_back(seq.text, stop)
    delta = CompletionDelta(
        index=seq.index,
        token_ids=tuple(seq.token_ids[seq.num_prompt_tokens + seq.num_tokens_emitted :]),
        text=seq.text[seq.num_text_emitted : text_end],
        finish_reason=seq.finish_reason,
        logprobs=None if seq.logprobs is None else tuple(seq.logprobs[seq.num_tokens_emitted :]),
    )
    seq.num_tokens_emitted = seq.num_completion_tokens
    seq.num_text_emitted = max(seq.num_text_emitted, text_end)
    return delta


def request_output(request: Request, tokenizer: Tokenizer) -> RequestOutput:
    """The finished result of a request: its completions in index (or, for beams, rank) order."""
    if request.params.use_beam_search:
        completions = _beam_completions(beam_state_of(request), request.params.n, tokenizer)
    else:
        completions = [_sample_completion(seq) for seq in sorted(request.finished_seqs, key=lambda s: s.index)]
    usage = Usage(
        prompt_tokens=request.num_prompt_tokens,
        completion_tokens=sum(len(c.token_ids) for c in completions),
        draft_tokens=sum(seq.num_draft_tokens for seq in request.finished_seqs),
        accepted_draft_tokens=sum(seq.num_accepted_draft_tokens for seq in request.finished_seqs),
    )
    return RequestOutput(
        request_id=request.request_id,
        prompt_token_ids=tuple(request.prompt_token_ids),
        outputs=tuple(completions),
        usage=usage,
    )


def _sample_completion(seq: Sequence) -> CompletionOutput:
    """The output of a finished sampled (not beam) sequence.

    Raises:
        EngineError: `seq` has not finished (an engine bug).
    """
    if seq.finish_reason is None:
        raise EngineError(f"sequence {seq.seq_id} has not finished")
    return CompletionOutput(
        index=seq.index,
        token_ids=tuple(seq.completion_token_ids),
        text=seq.text,
        finish_reason=seq.finish_reason,
        cumulative_logprob=seq.cumulative_logprob if seq.logprobs is not None else None,
        logprobs=tuple(seq.logprobs) if seq.logprobs is not None else None,
        error=seq.error,
    )


def _beam_completions(state: BeamState, num_outputs: int, tokenizer: Tokenizer) -> list[CompletionOutput]:
    if not state.hypotheses:
        return [CompletionOutput(index=0, token_ids=(), text="", finish_reason=FinishReason.ERROR, error=state.error)]
    completions = []
    for index, hypothesis in enumerate(state.hypotheses[:num_outputs]):
        is_stopped = hypothesis.finish_reason is FinishReason.STOP
        text_ids = hypothesis.token_ids[:-1] if is_stopped else hypothesis.token_ids
        completions.append(
            CompletionOutput(
                index=index,
                token_ids=hypothesis.token_ids,
                text=tokenizer.decode(list(text_ids), skip_special_tokens=True),
                finish_reason=hypothesis.finish_reason,
                cumulative_logprob=hypothesis.cumulative_logprob,
                logprobs=hypothesis.logprobs,
            )
        )
    return completions
