"""Beam search on the paged cache, against a cache-free reference implementation of the same rule."""

from __future__ import annotations

import pytest

from runtime.engine.beam import BeamState, beam_state_of
from runtime.engine.llm_engine import Engine
from runtime.engine.sampling_params import SamplingParams
from runtime.engine.sequence import Request
from runtime.errors import EngineError
from tests.runtime.fakes import DigitsConstraint, FakeRunner, reference_greedy, reference_logits, smollm2_tokenizer


def make_engine(num_blocks: int = 256) -> Engine:
    return Engine(FakeRunner(num_blocks=num_blocks, block_size=4), smollm2_tokenizer())


def reference_beam_search(
    prompt: list[int], num_beams: int, max_tokens: int, eos_ids: frozenset[int], length_penalty: float = 1.0
) -> list[tuple[float, list[int]]]:
    """Hugging Face's beam rule (early_stopping=False) over full recomputes: (score, tokens), best first."""

    def score(cumulative: float, length: int) -> float:
        return cumulative / length**length_penalty

    beams: list[tuple[float, list[int]]] = [(0.0, [])]
    hypotheses: list[tuple[float, list[int]]] = []
    for _ in range(max_tokens):
        candidates = []
        for cumulative, tokens in beams:
            logprobs = reference_logits(prompt + tokens).double().log_softmax(-1)
            top = logprobs.topk(2 * num_beams)
            candidates += [(cumulative + v, tokens + [t]) for v, t in zip(top.values.tolist(), top.indices.tolist())]
        candidates.sort(key=lambda c: c[0], reverse=True)
        beams = []
        for rank, (cumulative, tokens) in enumerate(candidates[: 2 * num_beams]):
            if tokens[-1] in eos_ids:
                if rank < num_beams:
                    hypotheses.append((score(cumulative, len(tokens)), tokens))
                continue
            beams.append((cumulative, tokens))
            if len(beams) == num_beams:
                break
        hypotheses = sorted(hypotheses, reverse=True)[:num_beams]
        best_live = score(beams[0][0], len(beams[0][1]))
        if len(hypotheses) == num_beams and hypotheses[-1][0] >= best_live:
            return hypotheses
        if len(beams[0][1]) == max_tokens:
            hypotheses += [(score(c, len(t)), t) for c, t in beams]
            return sorted(hypotheses, reverse=True)[:num_beams]
    return hypotheses


@pytest.mark.parametrize(("num_beams", "length_penalty"), [(2, 1.0), (4, 0.5)])
def test_beams_match_the_reference_and_share_blocks(num_beams: int, length_penalty: float) -> None:
    engine = make_engine()
    eos_ids = frozenset(engine.tokenizer.eos_token_ids)
    params = SamplingParams(
        temperature=0.0, max_tokens=10, num_beams=num_beams, n=num_beams, length_penalty=length_penalty
    )
    prompts = [[40, 41, 42], [7, 8, 9, 10, 11]]
    outputs = engine.generate(prompts, params)
    for prompt, output in zip(prompts, outputs):
        expected = reference_beam_search(prompt, num_beams, 10, eos_ids, length_penalty)
        assert [list(c.token_ids) for c in output.outputs] == [tokens for _, tokens in expected]
        for completion, (score, tokens) in zip(output.outputs, expected):
            assert completion.cumulative_logprob / len(tokens) ** length_penalty == pytest.approx(score)
    assert engine.runner.num_copied_blocks > 0  # forked beams copied shared partial blocks on write
    assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks


def test_best_beam_scores_at_least_the_greedy_path() -> None:
    engine = make_engine()
    for prompt in ([40, 41, 42], [12, 13], [100, 3, 77, 5]):
        params = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True, logprobs=0)
        greedy = engine.generate([prompt], params)[0]
        beam = engine.generate([prompt], params.replace(num_beams=4))[0]
        assert list(greedy.token_ids) == reference_greedy(prompt, 8)
        assert beam.outputs[0].cumulative_logprob >= greedy.outputs[0].cumulative_logprob - 1e-6
        assert sum(entry.logprob for entry in beam.logprobs) == pytest.approx(beam.outputs[0].cumulative_logprob)


def test_one_beam_is_greedy() -> None:
    engine = make_engine()
    output = engine.generate(
        [[40, 41, 42]], SamplingParams(temperature=0.0, max_tokens=8, num_beams=1, ignore_eos=True)
    )
    assert list(output[0].token_ids) == reference_greedy([40, 41, 42], 8)


def test_beams_under_a_constraint_stay_in_the_language() -> None:
    engine = make_engine()
    output = engine.generate(
        [[40, 41, 42]], SamplingParams(temperature=0.0, max_tokens=8, num_beams=3, n=3), constraints=DigitsConstraint(4)
    )[0]
    assert len(output.outputs) == 3
    for completion in output.outputs:
        assert completion.finish_reason == "stop"
        assert completion.text.isdigit() and len(completion.text) <= 4
    assert len({c.token_ids for c in output.outputs}) == 3
    assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks


def test_beam_state_of_a_request_without_beams_is_a_typed_engine_error() -> None:
    params = SamplingParams(num_beams=2)
    request = Request(request_id="r0", params=params, prompt_token_ids=[1], seqs=[])
    with pytest.raises(EngineError, match="no beam state"):
        beam_state_of(request)
    request.beam_state = BeamState(num_beams=2, length_penalty=1.0)
    assert beam_state_of(request) is request.beam_state
