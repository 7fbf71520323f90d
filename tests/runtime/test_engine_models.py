"""The engine over the real decoder: a tiny random Llama against transformers, and SmolLM2-135M itself."""

from __future__ import annotations

import pytest
import torch
import transformers

import runtime
from runtime.engine.llm_engine import Engine
from runtime.engine.sampling_params import SamplingParams
from runtime.model.architectures import build_model
from runtime.model.runner import ModelRunner
from tests.runtime.fakes import smollm2_tokenizer
from tests.runtime.hf_oracle import model_config_from_hf, tiny_hf_model

pytestmark = pytest.mark.slow  # the real model or an external corpus

GREEDY = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
TINY_PROMPTS = [[5, 17, 30], [60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70], [9], [44, 3, 90, 12, 12]]


@pytest.fixture(scope="module")
def tiny_hf() -> transformers.PreTrainedModel:
    model = tiny_hf_model("llama", seed=3)
    model.generation_config.eos_token_id = None
    return model


def tiny_engine(
    hf_model: transformers.PreTrainedModel, *, num_blocks: int = 64, block_size: int = 4, **limits: int
) -> Engine:
    config = model_config_from_hf(hf_model.config)
    model = build_model(config, hf_model.state_dict(), dtype=torch.float32)
    return Engine(ModelRunner(model, num_blocks=num_blocks, block_size=block_size), smollm2_tokenizer(), **limits)


def hf_greedy(hf_model: transformers.PreTrainedModel, prompt: list[int], num_tokens: int) -> list[int]:
    with torch.no_grad():
        out = hf_model.generate(
            torch.tensor([prompt]), max_new_tokens=num_tokens, min_new_tokens=num_tokens, do_sample=False
        )
    return out[0, len(prompt) :].tolist()


def test_tiny_model_greedy_matches_transformers_batched_and_alone(tiny_hf: transformers.PreTrainedModel) -> None:
    expected = [hf_greedy(tiny_hf, prompt, 12) for prompt in TINY_PROMPTS]
    batched = tiny_engine(tiny_hf).generate(TINY_PROMPTS, GREEDY)
    assert [list(o.token_ids) for o in batched] == expected
    engine = tiny_engine(tiny_hf)
    alone = [engine.generate([prompt], GREEDY)[0] for prompt in TINY_PROMPTS]
    assert [list(o.token_ids) for o in alone] == expected


def test_tiny_model_survives_preemption_and_chunked_prefill(tiny_hf: transformers.PreTrainedModel) -> None:
    engine = tiny_engine(tiny_hf, num_blocks=9, block_size=4, max_num_seqs=4, max_num_batched_tokens=6)
    params = GREEDY.replace(max_tokens=16)
    outputs = engine.generate(TINY_PROMPTS, params)
    assert engine.scheduler.num_preemptions > 0
    assert [list(o.token_ids) for o in outputs] == [hf_greedy(tiny_hf, p, 16) for p in TINY_PROMPTS]
    assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks


def test_tiny_model_parallel_samples_copy_kv_on_write(tiny_hf: transformers.PreTrainedModel) -> None:
    engine = tiny_engine(tiny_hf)
    prompt = TINY_PROMPTS[1]  # 11 tokens: the last block is shared and partial after prefill
    output = engine.generate([prompt], GREEDY.replace(n=3))[0]
    assert [list(c.token_ids) for c in output.outputs] == [hf_greedy(tiny_hf, prompt, 12)] * 3


@pytest.fixture(scope="module")
def smollm2_fp32() -> Engine:
    return runtime.load(dtype=torch.float32, max_model_len=1024)


def test_smollm2_greedy_answers_in_english(smollm2_fp32: Engine) -> None:
    output = smollm2_fp32.generate(["What is the capital of France?"], SamplingParams(temperature=0.0, max_tokens=24))[
        0
    ]
    assert "Paris" in output.text
    assert output.finish_reason == "stop"
    assert output.token_ids[-1] in smollm2_fp32.tokenizer.eos_token_ids


def test_smollm2_answers_under_a_regex_constraint(smollm2_fp32: Engine) -> None:
    import grammars

    question = "What is 2 + 2? Reply with just the number."
    constraint = grammars.compile(grammars.Regex(r"[0-9]{1,3}"))
    params = SamplingParams(temperature=0.0, max_tokens=8)
    free = smollm2_fp32.generate([question], params)[0]
    constrained = smollm2_fp32.generate([question], params, constraints=constraint)[0]
    assert constrained.finish_reason == "stop" and constraint.accepts(constrained.text)
    # Where the free answer's first token is allowed, the mask keeps the model's own choice.
    assert free.text[0].isdigit() and constrained.token_ids[0] == free.token_ids[0]


def test_smollm2_batch_equals_one_at_a_time(smollm2_fp32: Engine) -> None:
    prompts = ["Name a color.", "Write one word about the sea."]
    params = SamplingParams(temperature=0.0, max_tokens=8)
    together = smollm2_fp32.generate(prompts, params)
    alone = [smollm2_fp32.generate([prompt], params)[0] for prompt in prompts]
    assert [o.token_ids for o in together] == [o.token_ids for o in alone]


def test_smollm2_fp32_greedy_equals_transformers_on_the_same_gguf(smollm2_fp32: Engine) -> None:
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    from runtime.loading import default_model_path

    # transformers' own GGUF reader (dequantization and Q/K permutation done its way), not ours.
    path = default_model_path()
    config = transformers.AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
    hf_model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    tensors = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=hf_model)["tensors"]
    result = hf_model.load_state_dict(tensors, strict=False)
    assert result.unexpected_keys == [] and set(result.missing_keys) <= {"lm_head.weight"}  # tied to the embeddings
    prompt = smollm2_fp32.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Give me a short tip for writing clear code."}], tokenize=True
    )
    with torch.no_grad():
        expected = hf_model.generate(torch.tensor([prompt]), max_new_tokens=20, do_sample=False)[0, len(prompt) :]
    output = smollm2_fp32.generate([prompt], SamplingParams(temperature=0.0, max_tokens=20))[0]
    assert list(output.token_ids) == expected.tolist()


def test_default_load_streams_text(smollm2_fp32: Engine) -> None:
    engine = runtime.load(max_model_len=512)
    assert engine.runner.model.dtype == runtime.DEFAULT_DTYPE
    text = "".join(update.text for update in engine.stream("Say hello.", SamplingParams(temperature=0.0, max_tokens=8)))
    assert text.strip() and text.isprintable()


def test_a_warm_prefix_cache_gives_the_same_sampled_completions_as_a_cold_one() -> None:
    engine = runtime.load(max_model_len=512)  # the default dtype, whose bfloat16 sums depend on the pass
    params = SamplingParams(temperature=1.5, max_tokens=48, seed=7)
    topics = [
        "the sea",
        "a robot",
        "winter",
        "a lost key",
        "the moon",
        "a small town",
        "a dragon",
        "music",
        "a cat",
        "rain",
        "a train",
        "a garden",
    ]
    for topic in topics:
        prompt = f"Write one sentence about {topic}, then list three facts about it."
        cold = engine.generate([prompt], params)[0]
        hits_before = engine.block_manager.num_cached_blocks
        warm = engine.generate([prompt], params)[0]
        assert hits_before > 0 and warm.token_ids == cold.token_ids, topic


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        (dict(dtype="float16"), "dtype"),
        (dict(dtype=3), "dtype"),
        (dict(block_size=0), "block_size"),
        (dict(kv_cache_bytes=-1), "kv_cache_bytes"),
        (dict(max_model_len=10**6), "max_model_len"),
    ],
)
def test_load_rejects_bad_settings_with_typed_errors(kwargs: dict, field: str, smollm2_fp32: Engine) -> None:
    with pytest.raises(runtime.RequestError) as error:
        runtime.load(**kwargs)
    assert error.value.field == field
