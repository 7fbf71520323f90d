"""Engine.score: whole-continuation log-probabilities on a tiny random Llama, against transformers."""

from __future__ import annotations

import threading

import pytest
import torch
import transformers

from runtime.engine.llm_engine import Engine
from runtime.engine.sampling_params import SamplingParams
from runtime.errors import PromptTooLongError, RequestError
from runtime.model.architectures import build_model
from runtime.model.runner import ForwardBatch, ModelRunner
from tests.runtime.fakes import smollm2_tokenizer
from tests.runtime.hf_oracle import hf_logits, model_config_from_hf, tiny_hf_model

PROMPT = [5, 17, 30, 41, 8, 66, 12]
CONTINUATIONS = [[3], [40, 2], [40, 9, 2], [77, 1, 1, 1, 1, 1, 2]]


@pytest.fixture(scope="module")
def tiny_hf() -> transformers.PreTrainedModel:
    return tiny_hf_model("llama", seed=5)


def tiny_engine(hf_model: transformers.PreTrainedModel, *, num_blocks: int = 64, block_size: int = 4) -> Engine:
    model = build_model(model_config_from_hf(hf_model.config), hf_model.state_dict(), dtype=torch.float32)
    return Engine(ModelRunner(model, num_blocks=num_blocks, block_size=block_size), smollm2_tokenizer())


def reference_score(hf_model: transformers.PreTrainedModel, prompt: list[int], continuation: list[int]) -> float:
    """Sum of log-softmax logprobs of `continuation` from one cache-free forward over prompt + continuation."""
    logprobs = torch.log_softmax(hf_logits(hf_model, prompt + continuation), dim=-1)
    rows = range(len(prompt) - 1, len(prompt) + len(continuation) - 1)
    return sum(float(logprobs[row, token_id]) for row, token_id in zip(rows, continuation))


@pytest.mark.parametrize("prompt_len", [1, 4, 5, 7])  # block boundaries of block_size 4 on either side
def test_scores_equal_the_reference_log_softmax(tiny_hf: transformers.PreTrainedModel, prompt_len: int) -> None:
    engine = tiny_engine(tiny_hf)
    prompt = PROMPT[:prompt_len]
    scores = engine.score(prompt, CONTINUATIONS)
    expected = [reference_score(tiny_hf, prompt, continuation) for continuation in CONTINUATIONS]
    assert scores == pytest.approx(expected, abs=1e-4)
    manager = engine.block_manager
    assert manager.num_free_blocks == manager.num_blocks


def test_prompt_is_prefilled_once_and_reused_from_the_prefix_cache(
    tiny_hf: transformers.PreTrainedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = tiny_engine(tiny_hf)
    fed: list[list[int]] = []
    forward = engine.runner.forward

    def recording_forward(batch: ForwardBatch) -> torch.Tensor:
        fed.append([len(token_ids) for token_ids in batch.token_ids])
        return forward(batch)

    monkeypatch.setattr(engine.runner, "forward", recording_forward)
    first = engine.score(PROMPT, CONTINUATIONS)
    assert fed == [[6], [len(c) for c in CONTINUATIONS]]  # prompt but its last token, then one batch
    fed.clear()
    assert engine.score(PROMPT, CONTINUATIONS) == pytest.approx(first, abs=1e-5)
    assert fed == [[2], [len(c) for c in CONTINUATIONS]]  # the first full block came from the cache


def test_scoring_leaves_running_requests_intact(tiny_hf: transformers.PreTrainedModel) -> None:
    params = SamplingParams(temperature=0.0, max_tokens=10, ignore_eos=True)
    expected = tiny_engine(tiny_hf).generate([PROMPT], params)[0].token_ids
    engine = tiny_engine(tiny_hf)
    request_id = engine.add_request(PROMPT, params)
    updates = engine.step() + engine.step()
    scores = engine.score(PROMPT[:5], CONTINUATIONS)
    while engine.has_unfinished_requests():
        updates += engine.step()
    output = next(update.output for update in updates if update.request_id == request_id and update.output)
    assert output.token_ids == expected
    assert scores == pytest.approx([reference_score(tiny_hf, PROMPT[:5], c) for c in CONTINUATIONS], abs=1e-4)


def test_score_waits_for_the_stepping_thread(tiny_hf: transformers.PreTrainedModel) -> None:
    engine = tiny_engine(tiny_hf)
    engine.add_request(PROMPT, SamplingParams(temperature=0.0, max_tokens=30, ignore_eos=True))
    stepper = threading.Thread(target=lambda: [engine.step() for _ in range(30)])
    stepper.start()
    scores = [engine.score(PROMPT, CONTINUATIONS) for _ in range(3)]
    stepper.join()
    expected = [reference_score(tiny_hf, PROMPT, c) for c in CONTINUATIONS]
    assert all(s == pytest.approx(expected, abs=1e-4) for s in scores)


def test_bad_arguments_raise_typed_errors(tiny_hf: transformers.PreTrainedModel) -> None:
    engine = tiny_engine(tiny_hf, num_blocks=8)
    with pytest.raises(RequestError) as empty:
        engine.score(PROMPT, [[3], []])
    assert empty.value.field == "continuations[1]"
    with pytest.raises(RequestError) as none:
        engine.score(PROMPT, [])
    assert none.value.field == "continuations"
    with pytest.raises(RequestError) as too_many:
        engine.score(PROMPT, [[3]] * 8)
    assert too_many.value.field == "continuations"
    with pytest.raises(PromptTooLongError):
        engine.score(PROMPT, [[3] * 300])
