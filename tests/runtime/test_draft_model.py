"""Draft models: another model with the same tokenizer, and the target's own early layers (self-speculation).

Greedy identity is tested over `FakeRunner` (its verification rows are bit-identical to plain steps by
construction) with a tiny random draft, and over a tiny float32 model drafting for itself; sampling
exactness by chi-square tests of the rejection rule with drafts far from the target, and of whole
engines with and without a draft model.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import tokenizers
import torch
import transformers
from pydantic import BaseModel

import grammars
import runtime
from runtime.engine.draft_model import early_exit_model
from runtime.engine.draft_walk import Draft
from runtime.engine.llm_engine import Engine
from runtime.engine.sampling_params import SamplingParams
from runtime.engine.sequence import Sequence
from runtime.engine.speculative import SpeculativeConfig, Speculator
from runtime.errors import ModelNotFoundError, RequestError
from runtime.loading.default_model import default_model_path
from runtime.model.architectures import build_model
from runtime.model.runner import ForwardBatch, ModelRunner
from runtime.tokenizer import Tokenizer
from tests.runtime.fakes import FAKE_VOCAB_SIZE, FakeRunner, smollm2_tokenizer
from tests.runtime.hf_oracle import TINY_SIZES, model_config_from_hf, randomized_hf_model
from tests.runtime.test_speculative import assert_pool_whole, chi_square_critical, prompts, two_sample_chi_square

GREEDY = SamplingParams(temperature=0.0, max_tokens=16)
MODEL_ONLY = dict(jump_forward=False, prompt_lookup=False)


class Person(BaseModel):
    name: str
    age: int


@pytest.fixture(scope="module")
def wide_draft_hf() -> transformers.PreTrainedModel:
    """A tiny random model as wide as the fake model's vocabulary: a draft whose q is far from p."""
    return randomized_hf_model(transformers.LlamaConfig(**{**TINY_SIZES, "vocab_size": FAKE_VOCAB_SIZE}), seed=2)


@pytest.fixture(scope="module")
def deep_hf() -> transformers.PreTrainedModel:
    """A tiny random 4-layer model: a target for self-speculation."""
    return randomized_hf_model(transformers.LlamaConfig(**{**TINY_SIZES, "num_hidden_layers": 4}), seed=1)


def real_engine(
    hf_model: transformers.PreTrainedModel,
    speculative: SpeculativeConfig | None = None,
    tokenizer: Tokenizer | None = None,
    num_blocks: int = 64,
    **limits: int,
) -> Engine:
    model = build_model(model_config_from_hf(hf_model.config), hf_model.state_dict(), dtype=torch.float32)
    runner = ModelRunner(model, num_blocks=num_blocks, block_size=4)
    return Engine(runner, tokenizer or smollm2_tokenizer(), speculative=speculative, **limits)


def fake_engine(speculative: SpeculativeConfig | None, num_blocks: int = 256, **limits: int) -> Engine:
    return Engine(
        FakeRunner(num_blocks=num_blocks, block_size=4), smollm2_tokenizer(), speculative=speculative, **limits
    )


def assert_draft_pool_whole(engine: Engine) -> None:
    assert_pool_whole(engine)
    assert engine.speculator is not None and engine.speculator.draft_model is not None
    manager = engine.speculator.draft_model.block_manager
    assert manager.num_free_blocks == manager.num_blocks


# Greedy identity


@pytest.mark.parametrize("kind", ["free", pytest.param("json", marks=pytest.mark.slow)])
def test_greedy_outputs_are_identical_with_a_draft_model(
    kind: str, wide_draft_hf: transformers.PreTrainedModel
) -> None:
    constraint = grammars.compile(Person) if kind == "json" else None
    batch = prompts(8, seed=len(kind))
    params = GREEDY if kind == "json" else GREEDY.replace(ignore_eos=True)
    expected = [o.outputs[0].token_ids for o in fake_engine(None).generate(batch, params, constraints=constraint)]
    draft = real_engine(wide_draft_hf)
    for config in (SpeculativeConfig(**MODEL_ONLY, draft_model=draft), SpeculativeConfig(draft_model=draft)):
        engine = fake_engine(config)
        outputs = engine.generate(batch, params, constraints=constraint)
        assert [o.outputs[0].token_ids for o in outputs] == expected
        assert sum(o.usage.draft_tokens for o in outputs) > 0
        assert_draft_pool_whole(engine)
    if constraint is not None:
        assert all(isinstance(json.loads(o.outputs[0].text), dict) for o in outputs)


@pytest.mark.parametrize("source", ["self_draft", "draft_model"])
def test_greedy_outputs_of_a_real_model_are_identical_with_its_own_drafts(
    source: str, deep_hf: transformers.PreTrainedModel
) -> None:
    """float32 tiny model drafting for itself: its first 2 layers, or a second copy of all of it
    (every draft accepted but where a verification row rounds a near-tie otherwise)."""
    batch = [[5, 17, 30, 5, 17], [60, 61, 62, 63], [9], [44, 3, 90, 12, 12], [70, 71] * 4]
    params = GREEDY.replace(ignore_eos=True)
    expected = [o.token_ids for o in real_engine(deep_hf).generate(batch, params)]
    draft = {"self_draft_layers": 2} if source == "self_draft" else {"draft_model": real_engine(deep_hf)}
    engine = real_engine(deep_hf, SpeculativeConfig(**MODEL_ONLY, **draft))  # type: ignore[arg-type]
    outputs = engine.generate(batch, params)
    assert [o.token_ids for o in outputs] == expected
    drafted = sum(o.usage.draft_tokens for o in outputs)
    accepted = sum(o.usage.accepted_draft_tokens for o in outputs)
    assert 0 < accepted <= drafted
    if source == "draft_model":
        assert accepted > 0.9 * drafted  # the same model: its drafts are the output
    assert_draft_pool_whole(engine)


def test_early_exit_model_shares_the_weights_and_is_the_first_layers_then_the_head(
    deep_hf: transformers.PreTrainedModel,
) -> None:
    model = build_model(model_config_from_hf(deep_hf.config), deep_hf.state_dict(), dtype=torch.float32)
    shallow = early_exit_model(model, 2)
    assert len(model.layers) == 4 and model.config.num_layers == 4  # the target is left whole
    assert len(shallow.layers) == 2 and shallow.config.num_layers == 2
    assert shallow.layers[1].attn.qkv.weight is model.layers[1].attn.qkv.weight
    assert shallow.lm_head.weight is model.lm_head.weight and shallow.norm is model.norm
    token_ids = [3, 14, 15, 92, 65]
    runner = ModelRunner(shallow, num_blocks=4, block_size=4)
    batch = ForwardBatch(token_ids=[token_ids], num_cached=[0], block_tables=[[0, 1]], all_logits=True)
    logits = runner.forward(batch)  # [5, V]
    with torch.no_grad():
        hidden = deep_hf(torch.tensor([token_ids]), output_hidden_states=True).hidden_states[2][0]  # [5, H]
        expected = deep_hf.lm_head(deep_hf.model.norm(hidden))
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)


# Sampling exactness


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("q_kind", ["near", "far"])
def test_the_rejection_rule_samples_the_target_distribution_from_any_draft_distribution(seed: int, q_kind: str) -> None:
    """Draft tokens drawn from q (close to p, or piled on p's unlikeliest tokens), verified: the first
    token follows p_0, and the second, after an accepted first, follows p_1."""
    speculator = Speculator(SpeculativeConfig(), smollm2_tokenizer(), frozenset())
    torch.manual_seed(seed)
    vocab_size = 6
    logits = torch.randn(3, vocab_size) * 1.5  # positions 0, 1 and 2 of a two-token draft
    probs = logits.softmax(dim=-1)
    if q_kind == "near":
        q = (logits[:2] + torch.randn(2, vocab_size) * 0.5).softmax(dim=-1)
    else:
        q = (-3.0 * logits[:2]).softmax(dim=-1)
    generator = torch.Generator().manual_seed(seed)
    num_samples = 2000
    first: Counter[int] = Counter()
    second: Counter[int] = Counter()
    for _ in range(num_samples):
        draft_ids = [int(torch.multinomial(q[i], 1, generator=generator)) for i in range(2)]
        seq = Sequence(seq_id=0, token_ids=[1, 2], num_prompt_tokens=2, generator=generator)
        draft = Draft(token_ids=draft_ids, masks=None, kinds=["modelled"] * 2, num_modelled=2, probs=q)
        token_ids, _ = speculator.verify(logits.clone(), seq, SamplingParams(temperature=1.0), draft)
        first[token_ids[0]] += 1
        if len(token_ids) >= 2:
            second[token_ids[1]] += 1
    for counts, expected_probs in ((first, probs[0]), (second, probs[1])):
        total = sum(counts.values())
        statistic = sum(
            (counts[t] - total * float(p)) ** 2 / (total * float(p)) for t, p in enumerate(expected_probs.tolist())
        )
        assert statistic < chi_square_critical(vocab_size - 1), (counts, expected_probs)


@pytest.mark.parametrize("seed", [0, 1])
def test_engine_next_tokens_have_the_plain_distribution_with_self_speculation(
    seed: int, deep_hf: transformers.PreTrainedModel
) -> None:
    """Two-sample chi-square over the three tokens after the first sampled one, self-speculation
    (2 of 4 layers: q near p but not p) on vs off, top-k 3 keeping the outcomes few."""
    params = SamplingParams(temperature=1.0, top_k=3, max_tokens=4, ignore_eos=True, n=300, seed=seed)
    samples = []
    for config in (None, SpeculativeConfig(**MODEL_ONLY, num_draft_tokens=3, self_draft_layers=2)):
        engine = real_engine(deep_hf, config, num_blocks=2000, max_num_seqs=300)
        output = engine.generate([[5, 17, 30, 5, 17, 30]], params)[0]
        samples.append(Counter(tuple(c.token_ids[1:]) for c in output.outputs))
        if config is not None:
            assert output.usage.accepted_draft_tokens > 0
            assert_draft_pool_whole(engine)
    statistic, critical = two_sample_chi_square(samples)
    assert statistic < critical


# Refusals and the draft's KV pool


def swapped_tokenizer(tokenizer: Tokenizer) -> Tokenizer:
    """The tokenizer with the ids of two ordinary tokens swapped: same size, another vocabulary."""
    data = json.loads(tokenizer.backend.to_str())
    vocab = data["model"]["vocab"]
    a, b = "hello", "world"
    vocab[a], vocab[b] = vocab[b], vocab[a]
    return Tokenizer(tokenizers.Tokenizer.from_str(json.dumps(data)), eos_token_ids=tokenizer.eos_token_ids)


def test_a_draft_with_another_vocabulary_is_refused(deep_hf: transformers.PreTrainedModel) -> None:
    other = swapped_tokenizer(smollm2_tokenizer())
    draft = real_engine(deep_hf, tokenizer=other)
    with pytest.raises(RequestError) as info:
        real_engine(deep_hf, SpeculativeConfig(draft_model=draft))
    assert info.value.field == "draft_model" and ("hello" in str(info.value) or "world" in str(info.value))
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel({"<unk>": 0, "a": 1}, unk_token="<unk>"))
    backend.decoder = tokenizers.decoders.ByteLevel()
    tiny = real_engine(deep_hf, tokenizer=Tokenizer(backend, eos_token_ids=[0]))
    with pytest.raises(RequestError, match="2 tokens"):
        real_engine(deep_hf, SpeculativeConfig(draft_model=tiny))


def test_bad_draft_configurations_are_refused_with_the_field(deep_hf: transformers.PreTrainedModel) -> None:
    cases = [
        (lambda: SpeculativeConfig(self_draft_layers=0), "self_draft_layers"),
        (lambda: SpeculativeConfig(self_draft_layers=2, draft_model="x.gguf"), "self_draft_layers"),
        (lambda: real_engine(deep_hf, SpeculativeConfig(self_draft_layers=4)), "self_draft_layers"),
        (lambda: fake_engine(SpeculativeConfig(self_draft_layers=1)), "self_draft_layers"),
        (lambda: real_engine(deep_hf, SpeculativeConfig(draft_model=3)), "draft_model"),  # type: ignore[arg-type]
    ]
    for make, field in cases:
        with pytest.raises(RequestError) as info:
            make()
        assert info.value.field == field
    assert SpeculativeConfig(**MODEL_ONLY, self_draft_layers=1).has_draft_model  # a model is a source alone


def test_draft_blocks_are_freed_when_sequences_finish_or_are_aborted(deep_hf: transformers.PreTrainedModel) -> None:
    engine = real_engine(deep_hf, SpeculativeConfig(**MODEL_ONLY, self_draft_layers=2))
    assert engine.speculator is not None and engine.speculator.draft_model is not None
    draft_blocks = engine.speculator.draft_model.block_manager
    params = GREEDY.replace(ignore_eos=True, max_tokens=30)
    ids = [engine.add_request(prompt, params) for prompt in ([5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15])]
    for _ in range(4):
        engine.step()
    num_used = draft_blocks.num_used_blocks
    assert num_used > 0  # the draft caches the sequences it drafts for
    engine.abort_request(ids[0])  # between steps: freed at once
    assert draft_blocks.num_used_blocks < num_used
    engine.abort_request(ids[1])
    while engine.has_unfinished_requests():
        engine.step()
    assert_draft_pool_whole(engine)
    # An abort landing while a step makes its drafts is freed by that step.
    speculator = engine.speculator
    propose_batch = speculator.propose_batch
    late_ids = [engine.add_request(prompt, params) for prompt in ([5, 6, 7], [8, 9])]

    def aborting_propose_batch(candidates):  # type: ignore[no-untyped-def]
        drafts = propose_batch(candidates)
        engine.abort_request(late_ids[0])
        return drafts

    engine.step()  # prefill
    engine.step()
    speculator.propose_batch = aborting_propose_batch  # type: ignore[method-assign]
    engine.step()
    speculator.propose_batch = propose_batch  # type: ignore[method-assign]
    while engine.has_unfinished_requests():
        engine.step()
    assert_draft_pool_whole(engine)


def test_beam_search_is_never_drafted_by_a_draft_model(deep_hf: transformers.PreTrainedModel) -> None:
    engine = real_engine(deep_hf, SpeculativeConfig(**MODEL_ONLY, self_draft_layers=2))
    params = SamplingParams(max_tokens=6, num_beams=2, ignore_eos=True)
    expected = real_engine(deep_hf).generate([[5, 6, 7]], params)[0]
    output = engine.generate([[5, 6, 7]], params)[0]
    assert [c.token_ids for c in output.outputs] == [c.token_ids for c in expected.outputs]
    assert output.usage.draft_tokens == 0
    assert_draft_pool_whole(engine)


def test_a_draft_model_path_with_nothing_there_raises_model_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError):
        fake_engine(SpeculativeConfig(draft_model=tmp_path / "missing.gguf"))


@pytest.mark.slow
def test_smollm2_drafting_for_itself_from_its_file_keeps_greedy_outputs_in_float32() -> None:
    """A draft model loaded from a path (at `runtime.load`'s defaults: bfloat16, int4 weights)."""
    texts = ["Write one sentence about the sea.", "List three colours, comma separated."]
    params = SamplingParams(temperature=0.0, max_tokens=24)
    plain = runtime.load(dtype="float32").generate(texts, params)
    config = SpeculativeConfig(**MODEL_ONLY, draft_model=default_model_path())
    engine = runtime.load(dtype="float32", speculative=config)
    fast = engine.generate(texts, params)
    assert [o.outputs[0].token_ids for o in fast] == [o.outputs[0].token_ids for o in plain]
    assert sum(o.usage.accepted_draft_tokens for o in fast) > 0.5 * sum(o.usage.draft_tokens for o in fast)
    assert_draft_pool_whole(engine)
