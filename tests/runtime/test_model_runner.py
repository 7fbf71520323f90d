"""The paged forward path against a plain reference decoder (transformers, full recompute, no cache).

Every scenario feeds a runner pieces of sequences (prefill, chunked prefill, decode, k-token verify,
mixed in one batch, forks, scattered blocks) and checks each returned logit row against the
reference's logits for the same position of the same full sequence.
"""

from __future__ import annotations

import random

import pytest
import torch

import runtime.model.runner as runner_module
from runtime.errors import RequestError
from runtime.model import kernels
from runtime.model.architectures import Quantization, build_model
from runtime.model.kernels import attention as compiled_attention
from runtime.model.quantization import quantized_layers
from runtime.model.runner import ForwardBatch, ModelRunner
from tests.runtime.hf_oracle import hf_logits, model_config_from_hf, tiny_hf_model

BLOCK_SIZE = 4
ATOL = 1e-4


@pytest.fixture(scope="module", params=["llama", "mistral_window", "qwen2_moe"])
def oracle(request):
    """(reference model, our model); mistral_window's window (7) is shorter than the sequences."""
    hf_model = tiny_hf_model(request.param)
    model = build_model(model_config_from_hf(hf_model.config), dict(hf_model.state_dict()), dtype=torch.float32)
    return hf_model, model


def _sequence(seed: int, length: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(97) for _ in range(length)]


class _Sequence:
    """A sequence as the control plane would track it: tokens, cached count, and a block table."""

    def __init__(self, token_ids: list[int], block_ids: list[int]) -> None:
        self.token_ids = token_ids
        self.num_cached = 0
        self.block_ids = block_ids

    def step(self, num_new: int) -> tuple[list[int], int, list[int]]:
        """The next `num_new` tokens, as one sequence's share of a ForwardBatch."""
        new = self.token_ids[self.num_cached : self.num_cached + num_new]
        entry = (new, self.num_cached, self.block_ids)
        self.num_cached += num_new
        return entry


def _run(
    runner: ModelRunner,
    entries: list[tuple[list[int], int, list[int]]],
    all_logits: bool,
    *,
    is_prefill: bool = False,
) -> torch.Tensor:
    token_ids, num_cached, tables = (list(column) for column in zip(*entries))
    return runner.forward(ForwardBatch(token_ids, num_cached, tables, all_logits=all_logits, is_prefill=is_prefill))


def test_prefill_then_decode(oracle) -> None:
    hf_model, model = oracle
    tokens = _sequence(1, 20)
    expected = hf_logits(hf_model, tokens)
    runner = ModelRunner(model, num_blocks=8, block_size=BLOCK_SIZE)
    sequence = _Sequence(tokens, [0, 1, 2, 3, 4])
    logits = _run(runner, [sequence.step(9)], all_logits=False)
    torch.testing.assert_close(logits[0], expected[8], atol=ATOL, rtol=0)
    for position in range(9, 20):
        logits = _run(runner, [sequence.step(1)], all_logits=False)
        torch.testing.assert_close(logits[0], expected[position], atol=ATOL, rtol=0)


def test_chunked_prefill_returns_every_position(oracle) -> None:
    hf_model, model = oracle
    tokens = _sequence(2, 23)
    expected = hf_logits(hf_model, tokens)
    runner = ModelRunner(model, num_blocks=8, block_size=BLOCK_SIZE)
    sequence = _Sequence(tokens, [5, 6, 7, 0, 1, 2])
    rows = [_run(runner, [sequence.step(n)], all_logits=True) for n in (5, 6, 1, 11)]
    torch.testing.assert_close(torch.cat(rows), expected, atol=ATOL, rtol=0)


def test_mixed_batch_of_prefill_decode_and_verify(oracle) -> None:
    """One call: a fresh prompt, a decode step and a 4-token verification, of different lengths."""
    hf_model, model = oracle
    prompts = [_sequence(3, 12), _sequence(4, 15), _sequence(5, 17)]
    expected = [hf_logits(hf_model, tokens) for tokens in prompts]
    runner = ModelRunner(model, num_blocks=16, block_size=BLOCK_SIZE)
    first, second, third = (_Sequence(p, ids) for p, ids in zip(prompts, ([0, 1, 2], [3, 4, 5, 6], [7, 8, 9, 10, 11])))
    _run(runner, [second.step(14), third.step(13)], all_logits=False)
    entries = [first.step(12), second.step(1), third.step(4)]
    last = _run(runner, entries, all_logits=False)
    expected_last = torch.stack([expected[0][11], expected[1][14], expected[2][16]])
    torch.testing.assert_close(last, expected_last, atol=ATOL, rtol=0)
    # The same call again, asking for every new token, on a fresh cache.
    runner = ModelRunner(model, num_blocks=16, block_size=BLOCK_SIZE)
    _run(runner, [(prompts[1][:14], 0, second.block_ids), (prompts[2][:13], 0, third.block_ids)], all_logits=False)
    every = _run(runner, entries, all_logits=True)
    torch.testing.assert_close(every, torch.cat([expected[0], expected[1][14:], expected[2][13:]]), atol=ATOL, rtol=0)


def test_k_token_verification_equals_sequential_decode(oracle) -> None:
    _, model = oracle
    tokens = _sequence(6, 18)
    sequential = ModelRunner(model, num_blocks=8, block_size=BLOCK_SIZE)
    one_by_one = _Sequence(tokens, [0, 1, 2, 3, 4])
    _run(sequential, [one_by_one.step(12)], all_logits=False)
    decoded = torch.cat([_run(sequential, [one_by_one.step(1)], all_logits=False) for _ in range(6)])
    verifier = ModelRunner(model, num_blocks=8, block_size=BLOCK_SIZE)
    at_once = _Sequence(tokens, [4, 3, 2, 1, 0])
    _run(verifier, [at_once.step(12)], all_logits=False)
    verified = _run(verifier, [at_once.step(6)], all_logits=True)
    torch.testing.assert_close(verified, decoded, atol=ATOL, rtol=0)


def test_batch_decode_of_sequences_at_different_lengths(oracle) -> None:
    hf_model, model = oracle
    lengths = [5, 9, 14, 3, 11, 8, 16, 7]
    prompts = [_sequence(10 + i, length + 4) for i, length in enumerate(lengths)]
    runner = ModelRunner(model, num_blocks=64, block_size=BLOCK_SIZE)
    sequences = [_Sequence(prompt, list(range(6 * i + 5, 6 * i - 1, -1))) for i, prompt in enumerate(prompts)]
    _run(runner, [s.step(length) for s, length in zip(sequences, lengths)], all_logits=False)
    expected = [hf_logits(hf_model, prompt) for prompt in prompts]
    for step in range(4):
        logits = _run(runner, [s.step(1) for s in sequences], all_logits=False)
        rows = torch.stack([e[length + step] for e, length in zip(expected, lengths)])
        torch.testing.assert_close(logits, rows, atol=ATOL, rtol=0)


def test_fork_after_copy_blocks(oracle) -> None:
    """Two continuations of one prompt share its full blocks; the partly filled one is copied on write."""
    hf_model, model = oracle
    prompt = _sequence(7, 10)  # blocks 0, 1 full; block 2 holds positions 8-9
    left, right = prompt + _sequence(8, 5), prompt + _sequence(9, 5)
    runner = ModelRunner(model, num_blocks=12, block_size=BLOCK_SIZE)
    parent = _Sequence(left, [0, 1, 2, 3])
    _run(runner, [parent.step(10)], all_logits=False)
    runner.copy_blocks([(2, 6)])
    child = _Sequence(right, [0, 1, 6, 7])
    child.num_cached = 10
    logits = _run(runner, [parent.step(5), child.step(5)], all_logits=True)
    expected = torch.cat([hf_logits(hf_model, left)[10:], hf_logits(hf_model, right)[10:]])
    torch.testing.assert_close(logits, expected, atol=ATOL, rtol=0)


def test_scattered_block_tables_and_unused_tail_blocks(oracle) -> None:
    hf_model, model = oracle
    tokens = _sequence(11, 21)
    runner = ModelRunner(model, num_blocks=40, block_size=BLOCK_SIZE)
    table = [33, 2, 17, 39, 8, 21, 0, 12]  # two more blocks than 21 positions need
    sequence = _Sequence(tokens, table)
    rows = [_run(runner, [sequence.step(n)], all_logits=True) for n in (13, 1, 7)]
    torch.testing.assert_close(torch.cat(rows), hf_logits(hf_model, tokens), atol=ATOL, rtol=0)


@pytest.mark.parametrize("quantization", [Quantization.INT8, Quantization.INT4])
def test_quantized_layers_use_dense_weights_in_prefill_passes_only(quantization: Quantization) -> None:
    """A prefill pass of as few rows as a decode step still multiplies by the dense weights (so a prompt
    computes alike in one pass or several); decode passes run the weight-only kernels; between passes
    the layers are back to choosing by row count."""
    hf_model = tiny_hf_model("llama")
    config, weights = model_config_from_hf(hf_model.config), dict(hf_model.state_dict())
    model = build_model(config, weights, dtype=torch.bfloat16, quantization=quantization)
    layers = quantized_layers(model)
    runs_kernel: list[bool] = []
    for layer in layers:
        layer.register_forward_pre_hook(lambda layer, args: runs_kernel.append(layer.runs_kernel(args[0])))
    runner = ModelRunner(model, num_blocks=8, block_size=BLOCK_SIZE)
    runner.decode_plan = None  # the modules choose (the plan calls the kernels: tests/runtime/test_decode_plan.py)
    sequence = _Sequence(_sequence(12, 8), [0, 1])
    _run(runner, [sequence.step(3)], all_logits=True, is_prefill=True)
    # The head's approximate layer is not called in prefill passes (the dense head is exact).
    assert len(runs_kernel) == len(layers) - 1 and not any(runs_kernel)
    assert not any(layer.uses_dense_weights for layer in layers)
    runs_kernel.clear()
    _run(runner, [sequence.step(1)], all_logits=False)
    assert len(runs_kernel) == len(layers) and all(runs_kernel)


@pytest.mark.skipif(not kernels.has_compiled_kernels(), reason=str(kernels.KERNELS_UNAVAILABLE_REASON))
def test_a_model_past_the_dense_budget_prefills_on_its_quantized_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past `MAX_DENSE_PREFILL_BYTES` (a large model's dense copy would double its memory) no layer builds one:
    prefill passes run the kernels, which take any row count, with logits close to the dense weights'."""
    hf_model = tiny_hf_model("llama")
    config, weights = model_config_from_hf(hf_model.config), dict(hf_model.state_dict())
    model = build_model(config, weights, dtype=torch.bfloat16, quantization=Quantization.INT4)
    tokens = _sequence(14, 20)
    dense_runner = ModelRunner(model, num_blocks=8, block_size=BLOCK_SIZE)
    assert dense_runner.prefill_on_dense_weights
    dense = _run(dense_runner, [_Sequence(tokens, list(range(5))).step(20)], all_logits=True, is_prefill=True)
    for layer in quantized_layers(model):
        layer._dense = None
    monkeypatch.setattr(runner_module, "MAX_DENSE_PREFILL_BYTES", 0)
    runner = ModelRunner(model, num_blocks=8, block_size=BLOCK_SIZE)
    assert not runner.prefill_on_dense_weights
    on_kernels = _run(runner, [_Sequence(tokens, list(range(5))).step(20)], all_logits=True, is_prefill=True)
    assert all(layer._dense is None for layer in quantized_layers(model))
    assert (on_kernels - dense).abs().max() <= 0.02 * dense.abs().max()


def test_accounting(oracle) -> None:
    _, model = oracle
    config = model.config
    runner = ModelRunner(model, num_blocks=10, block_size=BLOCK_SIZE)
    assert runner.bytes_per_token == config.num_layers * config.num_kv_heads * config.head_dim * 2 * 4
    assert runner.pool_bytes == runner.bytes_per_token * 10 * BLOCK_SIZE
    assert (runner.num_blocks, runner.block_size, runner.config) == (10, BLOCK_SIZE, config)


@pytest.mark.parametrize(
    ("batch", "field"),
    [
        (ForwardBatch([], [], []), "token_ids"),
        (ForwardBatch([[1]], [0, 0], [[0]]), "num_cached"),
        (ForwardBatch([[1], []], [0, 0], [[0], [1]]), "token_ids[1]"),
        (ForwardBatch([[1]], [-1], [[0]]), "num_cached[0]"),
        (ForwardBatch([[1] * 5], [0], [[0]]), "block_tables[0]"),
        (ForwardBatch([[1]], [0], [[4]]), "block_tables[0]"),
        (ForwardBatch([[1]], [0], [[-1]]), "block_tables[0]"),
    ],
)
def test_bad_batches_raise_request_error(oracle, batch: ForwardBatch, field: str) -> None:
    _, model = oracle
    runner = ModelRunner(model, num_blocks=4, block_size=BLOCK_SIZE)
    with pytest.raises(RequestError) as info:
        runner.forward(batch)
    assert info.value.field == field


def test_decode_and_verify_passes_attend_with_the_compiled_kernel(oracle, monkeypatch: pytest.MonkeyPatch) -> None:
    """Prefill passes run the SDPA reference; decode and verify passes the compiled kernel (where built),
    in every layer, and both paths agree."""
    _, model = oracle
    calls: list[int] = []
    kernel = compiled_attention.paged_attention

    def counted(*args, **kwargs) -> torch.Tensor:
        calls.append(len(args[0]))  # new tokens of the pass
        return kernel(*args, **kwargs)

    monkeypatch.setattr(compiled_attention, "paged_attention", counted)
    runner = ModelRunner(model, num_blocks=8, block_size=BLOCK_SIZE)
    assert runner.compiled_attention == compiled_attention.runs_compiled(torch.float32, torch.device("cpu"))
    sequence = _Sequence(_sequence(13, 16), [0, 1, 2, 3])
    _run(runner, [sequence.step(9)], all_logits=False, is_prefill=True)
    assert not calls
    verify = sequence.step(3)
    compiled = _run(runner, [verify], all_logits=True)
    assert calls == ([3] * model.config.num_layers if runner.compiled_attention else [])
    runner.compiled_attention = False
    reference = _run(runner, [verify], all_logits=True)
    torch.testing.assert_close(compiled, reference, atol=ATOL, rtol=0)
