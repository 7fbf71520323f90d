"""The compiled decode/verify attention against the SDPA reference path, and its batch invariance.

Each scenario is a paged cache with sequences scattered over random slots, and a pass that brings some
new tokens per sequence (1: decode, k: verify). The compiled kernel must match the SDPA path within the
dtype's rounding, and a row's output must be bitwise the same whatever else shares its pass: other
sequences of other lengths, its own sequence's other new tokens, the thread count.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
import torch

from runtime.model.architectures import build_model
from runtime.model.kernels import attention as compiled
from runtime.model.layers.attention import AttentionMetadata, paged_attention, with_sliding_window
from runtime.model.runner import ForwardBatch, ModelRunner
from tests.runtime.hf_oracle import model_config_from_hf, tiny_hf_model

pytestmark = pytest.mark.skipif(
    not compiled.runs_compiled(torch.float32, torch.device("cpu")),
    reason=f"compiled attention not built: {compiled.ATTENTION_UNAVAILABLE_REASON}",
)

NUM_SLOTS = 1024
#: (query heads, K/V heads, head size): GQA of SmolLM2's shape, MQA, plain multi-head, Gemma 3's head size.
HEAD_SHAPES = [(6, 2, 64), (8, 1, 128), (4, 4, 32), (4, 2, 256), (4, 2, 24)]
#: Tolerance against SDPA: float32 is near-exact; bfloat16 output differs by its rounding.
TOLERANCE = {torch.float32: 2e-5, torch.bfloat16: 2e-2}


@dataclass
class Scene:
    """A paged cache and the slots of each sequence's positions, as a block table would lay them out."""

    kv_cache: torch.Tensor  # [NUM_SLOTS, 2, KVH, D]
    slots: list[list[int]]  # per sequence, the slot of each position
    num_heads: int

    @classmethod
    def random(cls, lengths: list[int], head_shape: tuple[int, int, int], dtype: torch.dtype, seed: int) -> Scene:
        num_heads, num_kv_heads, head_dim = head_shape
        generator = torch.Generator().manual_seed(seed)
        kv_cache = torch.randn(NUM_SLOTS, 2, num_kv_heads, head_dim, generator=generator).to(dtype)
        free = random.Random(seed).sample(range(NUM_SLOTS), sum(lengths))
        slots = [free[sum(lengths[:i]) : sum(lengths[: i + 1])] for i in range(len(lengths))]
        return cls(kv_cache, slots, num_heads)

    def queries(self, num_tokens: int, seed: int) -> torch.Tensor:
        """[T, H, D] random queries (scaled up so softmax is not near uniform)."""
        head_dim = self.kv_cache.shape[3]
        generator = torch.Generator().manual_seed(seed)
        return (2 * torch.randn(num_tokens, self.num_heads, head_dim, generator=generator)).to(self.kv_cache.dtype)

    def new_kv(self, num_tokens: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Random keys and values [T, KVH, D] of new tokens."""
        _, _, num_kv_heads, head_dim = self.kv_cache.shape
        generator = torch.Generator().manual_seed(seed + 1000)
        kv = torch.randn(2, num_tokens, num_kv_heads, head_dim, generator=generator).to(self.kv_cache.dtype)
        return kv[0], kv[1]


def metadata(
    scene: Scene,
    rows: list[int],
    query_lens: list[int],
    context_lens: list[int],
    *,
    runs_compiled: bool,
    window: int | None = None,
) -> AttentionMetadata:
    """The pass's metadata, built position by position (an independent twin of the runner's).

    Sequence `rows[i]` of the scene brings `query_lens[i]` new tokens, its last ones of `context_lens[i]`.
    """
    num_seqs, max_query_len, max_context_len = len(rows), max(query_lens), max(context_lens)
    group = scene.num_heads // scene.kv_cache.shape[2]
    positions, sequences, pad_rows, slot_mapping = [], [], [], []
    context_slots = []
    mask = torch.full((num_seqs, 1, max_query_len * group, max_context_len), float("-inf"))
    for i, (row, query_len, context_len) in enumerate(zip(rows, query_lens, context_lens)):
        slots = scene.slots[row][:context_len]
        context_slots += slots + [slots[0]] * (max_context_len - context_len)
        for t in range(max_query_len):
            position = min(context_len - query_len + t, context_len - 1)  # padding repeats the last
            first = 0 if window is None else max(0, position - window + 1)
            mask[i, 0, t * group : (t + 1) * group, first : position + 1] = 0
            if t < query_len:
                positions.append(position)
                sequences.append(i)
                pad_rows.append(i * max_query_len + t)
                slot_mapping.append(slots[position])
    is_padded = len(pad_rows) != num_seqs * max_query_len
    return AttentionMetadata(
        slot_mapping=torch.tensor(slot_mapping),
        context_slots=torch.tensor(context_slots),
        batch_size=num_seqs,
        max_query_len=max_query_len,
        max_context_len=max_context_len,
        query_pad_index=torch.tensor(pad_rows) if is_padded else None,
        attn_mask=None if runs_compiled else mask.to(scene.kv_cache.dtype),
        token_positions=torch.tensor(positions),
        window=window,
        token_sequences=torch.tensor(sequences) if runs_compiled else None,
    )


def attend(
    scene: Scene,
    rows: list[int],
    query_lens: list[int],
    context_lens: list[int],
    *,
    runs_compiled: bool = True,
    window: int | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass on a copy of the scene's cache: the output [T, H * D] and the cache after the pass."""
    pass_metadata = metadata(scene, rows, query_lens, context_lens, runs_compiled=runs_compiled, window=window)
    num_tokens = sum(query_lens)
    keys, values = scene.new_kv(num_tokens, seed)
    kv_cache = scene.kv_cache.clone()
    return paged_attention(scene.queries(num_tokens, seed), keys, values, kv_cache, pass_metadata), kv_cache


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("head_shape", HEAD_SHAPES)
@pytest.mark.parametrize("window", [None, 5])
def test_compiled_matches_sdpa(dtype: torch.dtype, head_shape: tuple[int, int, int], window: int | None) -> None:
    """Sequences of different lengths, decode and verify rows mixed (the SDPA path pads them)."""
    scene = Scene.random([9, 23, 4, 17], head_shape, dtype, seed=1)
    shape = ([0, 1, 2, 3], [1, 4, 2, 1], [9, 23, 4, 17])
    expected, expected_cache = attend(scene, *shape, runs_compiled=False, window=window)
    got, cache = attend(scene, *shape, runs_compiled=True, window=window)
    assert got.dtype == dtype and got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=TOLERANCE[dtype], rtol=TOLERANCE[dtype])
    assert torch.equal(cache, expected_cache)  # the kernel stored the new K/V where the reference does


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_custom_scale_and_single_position(dtype: torch.dtype) -> None:
    """A first token (one position to see) and Gemma 3's score scale."""
    scene = Scene.random([1, 6], (4, 2, 64), dtype, seed=2)
    pass_metadata = metadata(scene, [0, 1], [1, 1], [1, 6], runs_compiled=True)
    queries, (keys, values) = scene.queries(2, 0), scene.new_kv(2, 0)
    reference = metadata(scene, [0, 1], [1, 1], [1, 6], runs_compiled=False)
    got = paged_attention(queries, keys, values, scene.kv_cache.clone(), pass_metadata, scale=0.3)
    expected = paged_attention(queries, keys, values, scene.kv_cache.clone(), reference, scale=0.3)
    torch.testing.assert_close(got, expected, atol=TOLERANCE[dtype], rtol=TOLERANCE[dtype])
    assert torch.equal(got[0].view(4, 64), values[0].repeat_interleave(2, dim=0))  # softmax over one: V itself


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("window", [None, 6])
def test_rows_are_identical_alone_and_in_any_batch(dtype: torch.dtype, window: int | None) -> None:
    """Sequence 0's rows alone, then among other sequences of other lengths and query counts."""
    scene = Scene.random([14, 40, 3, 27, 9], (6, 2, 64), dtype, seed=3)
    alone, _ = attend(scene, [0], [3], [14], window=window)
    cases = [
        ([0, 1, 2], [3, 1, 2], [14, 40, 3]),
        ([3, 0, 4, 1], [4, 3, 1, 1], [27, 14, 9, 33]),
        ([4, 2, 1, 3, 0], [1, 1, 5, 2, 3], [9, 3, 40, 20, 14]),
    ]
    for rows, query_lens, context_lens in cases:
        start = sum(query_lens[: rows.index(0)])
        queries = scene.queries(sum(query_lens), 0)
        queries[start : start + 3] = scene.queries(3, 0)  # sequence 0's own queries
        pass_metadata = metadata(scene, rows, query_lens, context_lens, runs_compiled=True, window=window)
        keys, values = scene.new_kv(sum(query_lens), 0)
        keys[start : start + 3], values[start : start + 3] = scene.new_kv(3, 0)
        batched = paged_attention(queries, keys, values, scene.kv_cache.clone(), pass_metadata)
        assert torch.equal(batched[start : start + 3], alone)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    ("head_shape", "lengths", "query_lens"),
    [
        ((8, 2, 128), [50, 31, 8], [4, 1, 2]),  # one thread's worth of work
        ((8, 2, 128), [240, 31, 200], [4, 1, 2]),  # split over threads, items of unequal lengths
        ((8, 1, 128), [250], [1]),  # split over threads, one item
    ],
)
def test_rows_do_not_depend_on_the_thread_count(
    dtype: torch.dtype, head_shape: tuple[int, int, int], lengths: list[int], query_lens: list[int]
) -> None:
    scene = Scene.random(lengths, head_shape, dtype, seed=4)
    shape = (list(range(len(lengths))), query_lens, lengths)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single, _ = attend(scene, *shape)
        torch.set_num_threads(max(2, threads))
        multi, _ = attend(scene, *shape)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(single, multi)
    expected, _ = attend(scene, *shape, runs_compiled=False)
    torch.testing.assert_close(multi, expected, atol=TOLERANCE[dtype], rtol=TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("window", [None, 4])
def test_verify_pass_rows_equal_one_token_steps(dtype: torch.dtype, window: int | None) -> None:
    """Row j of a k-token pass is the one-token pass at that position, each step writing its own K/V."""
    scene = Scene.random([12, 30], (6, 2, 64), dtype, seed=5)
    num_cached, k = 7, 5
    queries, (keys, values) = scene.queries(k, 1), scene.new_kv(k, 1)
    verify_cache, step_cache = scene.kv_cache.clone(), scene.kv_cache.clone()
    verify = metadata(scene, [0, 1], [k, 1], [num_cached + k, 30], runs_compiled=True, window=window)
    other_query, (other_key, other_value) = scene.queries(1, 2), scene.new_kv(1, 2)
    verified = paged_attention(
        torch.cat((queries, other_query)),
        torch.cat((keys, other_key)),
        torch.cat((values, other_value)),
        verify_cache,
        verify,
    )
    for j in range(k):
        step = metadata(scene, [0], [1], [num_cached + j + 1], runs_compiled=True, window=window)
        row = paged_attention(queries[j : j + 1], keys[j : j + 1], values[j : j + 1], step_cache, step)
        assert torch.equal(row[0], verified[j])


def test_sliding_window_metadata_on_the_compiled_path() -> None:
    """Gemma 3's local layers: the compiled pass gets the window and builds no mask."""
    scene = Scene.random([20, 8], (4, 2, 64), torch.float32, seed=6)
    pass_metadata = metadata(scene, [0, 1], [2, 1], [20, 8], runs_compiled=True)
    positions = pass_metadata.token_positions
    local = with_sliding_window(pass_metadata, positions, window=4, num_kv_groups=2, dtype=torch.float32)
    assert local.window == 4 and local.attn_mask is None
    reference = with_sliding_window(
        metadata(scene, [0, 1], [2, 1], [20, 8], runs_compiled=False),
        positions,
        window=4,
        num_kv_groups=2,
        dtype=torch.float32,
    )
    queries, (keys, values) = scene.queries(3, 0), scene.new_kv(3, 0)
    got = paged_attention(queries, keys, values, scene.kv_cache.clone(), local)
    expected = paged_attention(queries, keys, values, scene.kv_cache.clone(), reference)
    torch.testing.assert_close(got, expected, atol=TOLERANCE[torch.float32], rtol=TOLERANCE[torch.float32])
    wide = with_sliding_window(pass_metadata, positions, window=20, num_kv_groups=2, dtype=torch.float32)
    assert wide is pass_metadata  # no query reaches past the window


def _kernel_inputs(scene: Scene) -> dict[str, torch.Tensor]:
    keys, values = scene.new_kv(2, 0)
    return dict(
        queries=scene.queries(2, 0),
        keys=keys,
        values=values,
        kv_cache=scene.kv_cache,
        slot_mapping=torch.tensor([scene.slots[0][4], scene.slots[1][2]]),
        slot_table=torch.tensor([scene.slots[0][:5], scene.slots[1][:5]]),
        sequences=torch.tensor([0, 1]),
        positions=torch.tensor([4, 2]),
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(queries=torch.zeros(2, 4, 64, dtype=torch.bfloat16)), "same dtype"),
        (dict(queries=torch.zeros(2, 3, 64)), "multiple of K/V heads"),
        (dict(queries=torch.zeros(2, 4, 32)), "head size"),
        (dict(positions=torch.tensor([4, 5])), "position 5"),
        (dict(sequences=torch.tensor([0, 2])), "sequence 2"),
        (dict(slot_table=torch.tensor([[0, 1, 2, 3, NUM_SLOTS]] * 2)), f"slot {NUM_SLOTS}"),
        (dict(positions=torch.tensor([4, 2], dtype=torch.int32)), "int64"),
        (dict(kv_cache=torch.zeros(2, NUM_SLOTS, 2, 64).transpose(0, 1)), "contiguous"),
        (dict(keys=torch.zeros(2, 4, 64)), r"keys must be \[2, 2, 64\]"),
        (dict(values=torch.zeros(3, 2, 64)), r"values must be \[2, 2, 64\]"),
        (dict(values=torch.zeros(2, 2, 64, dtype=torch.bfloat16)), "same dtype"),
        (dict(slot_mapping=torch.tensor([0, NUM_SLOTS])), f"stored at slot {NUM_SLOTS}"),
        (dict(slot_mapping=torch.tensor([0])), "slot_mapping, sequences and positions must be"),
    ],
)
def test_bad_inputs_name_the_problem(change: dict[str, torch.Tensor], message: str) -> None:
    scene = Scene.random([5, 5], (4, 2, 64), torch.float32, seed=7)
    inputs = _kernel_inputs(scene) | change
    cache = inputs["kv_cache"].clone()
    with pytest.raises(RuntimeError, match=message):
        compiled.paged_attention(**inputs, scale=0.125, window=None)
    assert torch.equal(inputs["kv_cache"], cache)  # checked before anything is stored


def test_window_must_be_positive() -> None:
    scene = Scene.random([5, 5], (4, 2, 64), torch.float32, seed=7)
    with pytest.raises(RuntimeError, match="window must be at least 1"):
        compiled.paged_attention(**_kernel_inputs(scene), scale=0.125, window=0)


def _row_at_a_time(linear: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """nn.Linear one row per matmul: batch invariant by construction, standing in for invariant GEMMs."""
    rows = x.reshape(-1, x.shape[-1])
    out = torch.cat([torch.nn.functional.linear(row[None], linear.weight, linear.bias) for row in rows])
    return out.view(*x.shape[:-1], -1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", ["llama", "mistral_window"])
def test_runner_decode_is_batch_and_verify_invariant(
    monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype, name: str
) -> None:
    """Through ModelRunner: a sequence's decode logits alone equal its rows in a batch, and a k-token
    verify pass equals k decode steps, bitwise. The dense layers run one row per matmul here (torch's
    GEMMs may round by batch size); so this covers attention and every other per-row op of the pass."""
    monkeypatch.setattr(torch.nn.Linear, "forward", _row_at_a_time)
    hf_model = tiny_hf_model(name)
    model = build_model(model_config_from_hf(hf_model.config), dict(hf_model.state_dict()), dtype=dtype)
    rng = random.Random(8)
    tokens = [[rng.randrange(97) for _ in range(length)] for length in (20, 13, 17)]
    prompt_lens = [10, 6, 12]

    def prefilled(tables: list[list[int]]) -> ModelRunner:
        runner = ModelRunner(model, num_blocks=24, block_size=4)
        assert runner.compiled_attention
        for seq, table, prompt_len in zip(tokens, tables, prompt_lens):
            runner.forward(ForwardBatch([seq[:prompt_len]], [0], [table], is_prefill=True))
        return runner

    tables = [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 12, 13, 14]]
    alone, batched, verifier = prefilled(tables[:1]), prefilled(tables), prefilled(tables)
    steps = [alone.forward(ForwardBatch([[tokens[0][p]]], [p], tables[:1])) for p in range(10, 16)]
    for step, position in enumerate(range(10, 16)):
        entries = [(tokens[0][position], position), (tokens[1][6 + step], 6 + step), (tokens[2][12], 12)]
        if step % 2:  # sequence 2 sits out every other step
            entries = entries[:2]
        batch = ForwardBatch([[t] for t, _ in entries], [p for _, p in entries], tables[: len(entries)])
        logits = batched.forward(batch)
        assert torch.equal(logits[0], steps[step][0])
    verified = verifier.forward(ForwardBatch([tokens[0][10:16], tokens[1][6:9]], [10, 6], tables[:2], all_logits=True))
    assert torch.equal(verified[:6], torch.cat(steps))
