"""SamplingParams validation, and each logits processor alone and in their fixed order."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from grammars.errors import GrammarError
from runtime.engine.sampler import apply_constraint_masks, apply_penalties, sample_tokens, token_logprobs
from runtime.engine.sampling_params import SamplingParams
from runtime.engine.sequence import Sequence
from runtime.errors import RequestError

GREEDY = SamplingParams(temperature=0.0)
SAMPLED = SamplingParams(temperature=1.0)


def seq_with(prompt: list[int], completion: list[int] = (), matcher: object = None) -> Sequence:
    return Sequence(seq_id=0, token_ids=[*prompt, *completion], num_prompt_tokens=len(prompt), matcher=matcher)


class FixedMask:
    def __init__(self, mask: torch.Tensor, error: GrammarError | None = None) -> None:
        self._mask, self.error = mask, error

    def mask(self, max_seconds: float | None = None, max_remaining_tokens: int | None = None) -> torch.Tensor:
        return self._mask


def draw(logits: list[float], params: SamplingParams, num_draws: int = 400, seed: int = 0) -> Counter:
    generator = torch.Generator().manual_seed(seed)
    row = torch.tensor([logits])
    return Counter(sample_tokens(row, [params], [generator])[0] for _ in range(num_draws))


# Validation


def test_defaults_are_greedy_and_otherwise_follow_vllm_with_a_useful_max_tokens() -> None:
    params = SamplingParams()
    assert params.is_greedy and params.temperature == 0.0
    assert (params.top_p, params.top_k, params.min_p) == (1.0, None, 0.0)
    assert (params.n, params.num_beams, params.logprobs, params.seed) == (1, 1, None, None)
    assert params.max_tokens == 256 and params.stop == () and not params.ignore_eos


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        (dict(max_tokens=0), "max_tokens"),
        (dict(max_tokens=2.5), "max_tokens"),
        (dict(max_tokens=True), "max_tokens"),
        (dict(temperature=-0.1), "temperature"),
        (dict(temperature=math.nan), "temperature"),
        (dict(temperature="hot"), "temperature"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(top_k=0), "top_k"),
        (dict(min_p=1.5), "min_p"),
        (dict(seed=-1), "seed"),
        (dict(stop=[""]), "stop"),
        (dict(stop=5), "stop"),
        (dict(stop_token_ids=[-1]), "stop_token_ids"),
        (dict(ignore_eos=1), "ignore_eos"),
        (dict(repetition_penalty=0.0), "repetition_penalty"),
        (dict(presence_penalty=2.5), "presence_penalty"),
        (dict(frequency_penalty=-3.0), "frequency_penalty"),
        (dict(logprobs=21), "logprobs"),
        (dict(logprobs=-1), "logprobs"),
        (dict(n=0), "n"),
        (dict(num_beams=0), "num_beams"),
        (dict(length_penalty=0.5), "length_penalty"),
        (dict(num_beams=2, n=3), "n"),
        (dict(num_beams=2, top_p=0.9), "top_p"),
        (dict(num_beams=2, seed=1), "seed"),
        (dict(num_beams=2, temperature=0.7), "temperature"),
        (dict(num_beams=2, stop=["\n"]), "stop"),
    ],
)
def test_invalid_values_raise_request_error_naming_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(RequestError) as error:
        SamplingParams(**kwargs)
    assert error.value.field == field


def test_stop_accepts_one_string_and_replace_revalidates() -> None:
    params = SamplingParams(stop="END", stop_token_ids=[7])
    assert params.stop == ("END",) and params.stop_token_ids == (7,)
    assert params.replace(max_tokens=3).max_tokens == 3
    with pytest.raises(RequestError) as error:
        params.replace(top_p=2.0)
    assert error.value.field == "top_p"
    with pytest.raises(RequestError) as unknown:
        params.replace(use_beam_search=True)
    assert unknown.value.field == "use_beam_search"
    assert SamplingParams(num_beams=3, temperature=0.0, length_penalty=0.5).use_beam_search


# Processors


def test_constraint_mask_sets_disallowed_to_minus_inf_and_flags_dead_rows() -> None:
    logits = torch.zeros(5, 4)
    allowed = torch.tensor([True, False, True, False])
    seqs = [
        seq_with([1]),
        seq_with([1], matcher=FixedMask(allowed)),
        seq_with([1], matcher=FixedMask(allowed, error=GrammarError("budget"))),
        seq_with([1], matcher=FixedMask(torch.zeros(4, dtype=torch.bool))),
        seq_with([1], matcher=FixedMask(torch.ones(3, dtype=torch.bool))),  # wrong width
    ]
    is_alive = apply_constraint_masks(logits, seqs, [None] * len(seqs))
    assert is_alive == [True, True, False, False, False]
    assert torch.equal(logits[0], torch.zeros(4))
    assert logits[1].tolist() == [0.0, -math.inf, 0.0, -math.inf]


def test_repetition_penalty_scales_seen_tokens_by_sign() -> None:
    logits = torch.tensor([[2.0, -2.0, 2.0, 1.0]])
    seq = seq_with([0], [1])
    apply_penalties(logits, [seq], [SamplingParams(repetition_penalty=2.0)])
    assert logits.tolist() == [[1.0, -4.0, 2.0, 1.0]]


def test_presence_and_frequency_penalties_count_completion_tokens_only() -> None:
    logits = torch.zeros(2, 4)
    seqs = [seq_with([3, 3], [1, 1, 2]), seq_with([3], [1])]
    params = [SamplingParams(presence_penalty=0.5, frequency_penalty=0.25), SamplingParams()]
    apply_penalties(logits, seqs, params)
    assert logits[0].tolist() == [0.0, -1.0, -0.75, 0.0]
    assert logits[1].tolist() == [0.0, 0.0, 0.0, 0.0]  # no penalties asked: untouched


def test_penalties_never_revive_masked_tokens() -> None:
    logits = torch.zeros(1, 3)
    seq = seq_with([0], [1], matcher=FixedMask(torch.tensor([False, False, True])))
    apply_constraint_masks(logits, [seq], [None])
    apply_penalties(logits, [seq], [SamplingParams(repetition_penalty=0.5, presence_penalty=-2.0)])
    assert logits[0, :2].tolist() == [-math.inf, -math.inf]


def test_greedy_rows_take_the_argmax_and_sampled_rows_sample() -> None:
    logits = torch.tensor([[0.0, 3.0, 1.0], [0.0, 0.0, 0.0]])
    generator = torch.Generator().manual_seed(0)
    picks = {sample_tokens(logits, [GREEDY, SAMPLED], [None, generator])[1] for _ in range(60)}
    assert sample_tokens(logits, [GREEDY, GREEDY], [None, None]) == [1, 0]
    assert picks == {0, 1, 2}


def test_temperature_sampling_follows_the_softmax() -> None:
    counts = draw([0.0, 1.0, 2.0], SamplingParams(temperature=1.0), num_draws=3000)
    expected = torch.tensor([0.0, 1.0, 2.0]).softmax(-1).tolist()
    for token_id, probability in enumerate(expected):
        assert counts[token_id] / 3000 == pytest.approx(probability, abs=0.03)


def test_low_temperature_sharpens_and_high_flattens() -> None:
    sharp = draw([0.0, 1.0, 2.0], SamplingParams(temperature=0.1))
    flat = draw([0.0, 1.0, 2.0], SamplingParams(temperature=10.0))
    assert sharp[2] > 390 and min(flat.values()) > 80


def test_top_k_top_p_min_p_each_truncate() -> None:
    logits = [3.0, 2.0, 1.0, 0.0]
    assert set(draw(logits, SAMPLED.replace(top_k=2))) == {0, 1}
    # probs 0.644 / 0.237 / 0.087 / 0.032: a token stays while the mass before it is below top_p.
    assert set(draw(logits, SAMPLED.replace(top_p=0.6))) == {0}
    assert set(draw(logits, SAMPLED.replace(top_p=0.85))) == {0, 1}
    assert set(draw(logits, SAMPLED.replace(top_p=0.9))) == {0, 1, 2}
    assert set(draw(logits, SAMPLED.replace(min_p=0.3))) == {0, 1}  # p(1)/p(0) = e^-1 = 0.37


def test_top_k_applies_before_top_p() -> None:
    # probs 0.5/0.3/0.2: top-k 2 renormalizes to 0.625/0.375, after which top-p 0.6 keeps one token.
    # The other order would keep two.
    logits = torch.tensor([0.5, 0.3, 0.2]).log().tolist()
    assert set(draw(logits, SAMPLED.replace(top_k=2, top_p=0.6))) == {0}


def test_temperature_applies_before_top_p() -> None:
    # At T=2 the top token has 0.51 < 0.6, so top-p keeps a second one; at T=1 it alone has 0.67.
    assert set(draw([2.0, 1.0, 0.0], SamplingParams(temperature=2.0, top_p=0.6))) == {0, 1}
    assert set(draw([2.0, 1.0, 0.0], SamplingParams(temperature=1.0, top_p=0.6))) == {0}


def test_seeded_generators_make_rows_reproducible_in_any_batch() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 50)
    params = [SAMPLED, SAMPLED.replace(top_p=0.9), SAMPLED.replace(top_k=5)]

    def run(order: list[int]) -> list[int]:
        generators = [torch.Generator().manual_seed(100 + row) for row in order]
        return sample_tokens(logits[order], [params[row] for row in order], generators)

    forward = run([0, 1, 2])
    backward = run([2, 1, 0])
    assert forward == backward[::-1]
    assert [run([0, 1, 2]) for _ in range(3)] == [forward] * 3


def test_sampling_never_picks_a_masked_token() -> None:
    logits = torch.zeros(1, 1000)
    logits[0, 500:] = -math.inf
    generator = torch.Generator().manual_seed(1)
    picks = [sample_tokens(logits, [SAMPLED.replace(top_p=0.99)], [generator])[0] for _ in range(300)]
    assert max(picks) < 500


def test_token_logprobs_report_chosen_and_top_alternatives() -> None:
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    entries = token_logprobs(logits, [2, 3], [2, 0])
    expected = logits.log_softmax(-1)
    assert entries[0].logprob == pytest.approx(expected[0, 2].item())
    assert [token_id for token_id, _ in entries[0].top_logprobs] == [1, 2]
    assert entries[1].top_logprobs == () and entries[1].logprob == pytest.approx(math.log(0.25))
