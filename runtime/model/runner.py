"""The one forward path: a `ForwardBatch` of sequences in, float32 logits out, K/V kept in paged blocks.

Prefill, decode and k-token draft verification are the same call: each sequence brings k >= 1 new
tokens, the number of positions it already has cached and the block table covering all of them.
The runner turns that into tensors once per call (token ids, positions, cache slots, attention
mask) and the model reuses them in every layer, so per-step Python work does not grow with depth.
Block ids come from the control plane (`runtime.engine.block_manager`); the runner only reads and writes
the blocks it is given.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import torch

from runtime.config import ModelConfig
from runtime.errors import RequestError
from runtime.model.architectures.llama import Transformer
from runtime.model.decode_plan import DecodePlan
from runtime.model.kernels import attention as compiled_attention
from runtime.model.kv_cache import KVCache
from runtime.model.layers.attention import AttentionMetadata
from runtime.model.quantization import quantized_layers

logger = logging.getLogger(__name__)

#: Prefill passes multiply a quantized model's dense bfloat16 weights (each layer dequantizes them on first
#: use and keeps them) while those take at most this much; a larger model's prefill runs its quantized kernels,
#: which read the weights as stored, so its memory stays near the file's size (an 8B model's dense copy would
#: take 16 GB).
MAX_DENSE_PREFILL_BYTES = 2**30


@dataclass
class ForwardBatch:
    """New tokens of a batch of sequences, and where their KV lives.

    Attributes:
        token_ids: new tokens per sequence, k_i >= 1 (prefill: the prompt; decode: 1; verify: k drafts).
        num_cached: positions already cached per sequence = position of its first new token.
        block_tables: block ids covering positions [0, num_cached[i] + k_i) of each sequence, in order.
        all_logits: False: logits of each sequence's last new token, [B, V]; True: of every new token,
            [sum k_i, V], sequence after sequence.
        is_prefill: the pass feeds prompt tokens: the runner then has quantized layers use their dense
            weights (`QuantizedLinear.uses_dense_weights`; up to `MAX_DENSE_PREFILL_BYTES` of them, else
            their row-invariant kernels), so a prompt computes alike in one pass or several.
    """

    token_ids: list[list[int]]
    num_cached: list[int]
    block_tables: list[list[int]]
    all_logits: bool = False
    is_prefill: bool = False


@dataclass(frozen=True)
class _ModelInputs:
    token_ids: torch.Tensor
    positions: torch.Tensor
    metadata: AttentionMetadata
    logits_index: torch.Tensor | None


class ModelRunner:
    """Runs a `Transformer` over batches of sequences with a paged KV cache it allocates once.

    Args:
        model: from `runtime.model.architectures.build_model`.
        num_blocks: blocks in the KV pool (what the block manager hands out).
        block_size: positions per block.
        device: where the model lives and the cache is allocated.

    Attributes:
        compiled_attention: decode and verify passes (not `is_prefill`) attend with the compiled,
            batch-invariant kernel; True where it is built and takes the model's dtype and device. Set
            False to run those passes on the SDPA reference path (tests and benchmarks compare the two).
        decode_plan: with the compiled attention, decode and verify passes run the layers as kernel
            calls (`DecodePlan`, bitwise the modules' logits); None where the model's layers are not all
            the plain block over the compiled kernels. Set None to run the modules.
        prefill_on_dense_weights: prefill passes multiply the quantized layers' dense bfloat16 weights (each
            kept once built); False where those would take over `MAX_DENSE_PREFILL_BYTES`: prefill then runs
            the quantized kernels, whose long passes are slower (benchmarks/memory.py measures both).

    Raises:
        RequestError: a non-positive `num_blocks` or `block_size`.
    """

    def __init__(
        self, model: Transformer, *, num_blocks: int, block_size: int = 16, device: torch.device | str = "cpu"
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.kv_cache = KVCache(
            model.config, num_blocks=num_blocks, block_size=block_size, dtype=model.dtype, device=self.device
        )
        self._slot_offsets = torch.arange(block_size, device=self.device)  # [S]
        self._quantized_layers = quantized_layers(self.model)
        self.prefill_on_dense_weights = (
            sum(layer.dense_bytes for layer in self._quantized_layers) <= MAX_DENSE_PREFILL_BYTES
        )
        self.compiled_attention = compiled_attention.runs_compiled(model.dtype, self.device)
        self.decode_plan = DecodePlan.of(self.model)
        if compiled_attention.ATTENTION_UNAVAILABLE_REASON is not None:
            logger.warning(
                "decode attention runs the SDPA path, not batch invariant: %s",
                compiled_attention.ATTENTION_UNAVAILABLE_REASON,
            )

    @property
    def config(self) -> ModelConfig:
        """The model's hyper-parameters (vocabulary size, context window, ...)."""
        return self.model.config

    @property
    def block_size(self) -> int:
        """Positions per KV block: the block manager must use the same."""
        return self.kv_cache.block_size

    @property
    def num_blocks(self) -> int:
        """Blocks in the KV pool: valid block ids are 0 .. num_blocks - 1."""
        return self.kv_cache.num_blocks

    @property
    def bytes_per_token(self) -> int:
        """KV bytes one position of one sequence takes across all layers."""
        return self.kv_cache.bytes_per_token

    @property
    def pool_bytes(self) -> int:
        """Bytes of the whole KV pool."""
        return self.kv_cache.pool_bytes

    @torch.inference_mode()
    def forward(self, batch: ForwardBatch) -> torch.Tensor:
        """Score the batch's new tokens and store their K/V in the given blocks.

        Returns:
            float32 logits: [B, V] for each sequence's last new token, or [sum k_i, V] with `all_logits`.

        Raises:
            RequestError: an empty batch, lists of different lengths, a sequence with no new token or a
                negative `num_cached`, or a block table too short or naming blocks outside the pool.
        """
        inputs = self._prepare(batch)
        model_inputs = (inputs.token_ids, inputs.positions, self.kv_cache.layers, inputs.metadata, inputs.logits_index)
        if not batch.is_prefill or not self.prefill_on_dense_weights:
            if self.decode_plan is not None and inputs.metadata.token_sequences is not None:
                return self.model(*model_inputs, plan=self.decode_plan)
            return self.model(*model_inputs)
        self._set_dense_weights(True)
        try:
            return self.model(*model_inputs)
        finally:
            self._set_dense_weights(False)

    def copy_blocks(self, pairs: list[tuple[int, int]]) -> None:
        """Copy-on-write: the K/V of each `src` block into its `dst` block, in every layer.

        Raises:
            RequestError: see `KVCache.copy_blocks`.
        """
        self.kv_cache.copy_blocks(pairs)

    def _set_dense_weights(self, enabled: bool) -> None:
        """Have the quantized layers multiply by their dense weights at any row count (a prefill pass), or
        choose by row count (at rest, and in decode passes, which then set nothing: a module attribute
        costs microseconds to set, times every layer)."""
        for layer in self._quantized_layers:
            layer.uses_dense_weights = enabled

    def _check(self, batch: ForwardBatch) -> list[int]:
        """Validate the batch; returns each sequence's context length (cached + new)."""
        num_seqs = len(batch.token_ids)
        if num_seqs == 0:
            raise RequestError("the batch has no sequence", "token_ids")
        if len(batch.num_cached) != num_seqs or len(batch.block_tables) != num_seqs:
            counts = f"{len(batch.num_cached)} num_cached and {len(batch.block_tables)} block tables"
            raise RequestError(f"{num_seqs} sequences but {counts}", "num_cached")
        context_lens = []
        sequences = zip(batch.token_ids, batch.num_cached, batch.block_tables)
        for i, (token_ids, num_cached, table) in enumerate(sequences):
            if not token_ids:
                raise RequestError("a sequence needs at least one new token", f"token_ids[{i}]")
            if num_cached < 0:
                raise RequestError(f"must be >= 0, not {num_cached}", f"num_cached[{i}]")
            context_len = num_cached + len(token_ids)
            num_needed = -(-context_len // self.block_size)
            if len(table) < num_needed:
                reason = f"{len(table)} blocks of {self.block_size} cannot hold {context_len} positions"
                raise RequestError(reason, f"block_tables[{i}]")
            for block_id in (min(table[:num_needed]), max(table[:num_needed])):
                self.kv_cache.check_block_id(block_id, f"block_tables[{i}]")
            context_lens.append(context_len)
        return context_lens

    def _prepare(self, batch: ForwardBatch) -> _ModelInputs:
        context_lens = self._check(batch)
        device, block_size = self.device, self.block_size
        query_lens = [len(token_ids) for token_ids in batch.token_ids]
        num_seqs, max_query_len, max_context_len = len(query_lens), max(query_lens), max(context_lens)

        num_table_blocks = -(-max_context_len // block_size)
        tables = [table[:num_table_blocks] + [0] * (num_table_blocks - len(table)) for table in batch.block_tables]
        table_tensor = torch.tensor(tables, dtype=torch.int64, device=device)  # [B, NB]
        slot_grid = (table_tensor[:, :, None] * block_size + self._slot_offsets).view(num_seqs, -1)  # [B, NB * S]
        context_slots = slot_grid[:, :max_context_len].reshape(-1)  # [B * L]

        num_cached = torch.tensor(batch.num_cached, dtype=torch.int64, device=device)
        last_positions = torch.tensor(context_lens, dtype=torch.int64, device=device)[:, None] - 1
        # Padding queries (past a sequence's own k) repeat its last position, so no mask row is empty.
        query_positions = num_cached[:, None] + torch.arange(max_query_len, device=device)  # [B, Q]
        query_positions = torch.minimum(query_positions, last_positions)
        if all(query_len == max_query_len for query_len in query_lens):
            query_pad_index = None
            positions = query_positions.view(-1)  # [T]
            slot_mapping = slot_grid.gather(1, query_positions).view(-1)  # [T]
        else:
            pad_rows = [i * max_query_len + t for i, query_len in enumerate(query_lens) for t in range(query_len)]
            query_pad_index = torch.tensor(pad_rows, dtype=torch.int64, device=device)  # [T]
            positions = query_positions.view(-1)[query_pad_index]
            slot_mapping = slot_grid[query_pad_index // max_query_len, positions]

        runs_compiled = self.compiled_attention and not batch.is_prefill
        metadata = AttentionMetadata(
            slot_mapping=slot_mapping,
            context_slots=context_slots,
            batch_size=num_seqs,
            max_query_len=max_query_len,
            max_context_len=max_context_len,
            query_pad_index=query_pad_index,
            attn_mask=None if runs_compiled else self._attention_mask(query_positions, query_lens, context_lens),
            token_positions=positions,
            window=self.config.sliding_window,
            token_sequences=self._token_sequences(query_lens) if runs_compiled else None,
        )
        if batch.all_logits or max_query_len == 1:
            logits_index = None
        else:
            last_rows = list(itertools.accumulate(query_lens))
            logits_index = torch.tensor(last_rows, dtype=torch.int64, device=device) - 1  # [B]
        token_ids = torch.tensor(list(itertools.chain.from_iterable(batch.token_ids)), dtype=torch.int64, device=device)
        return _ModelInputs(token_ids, positions, metadata, logits_index)

    def _token_sequences(self, query_lens: list[int]) -> torch.Tensor:
        """[T] int64: the sequence (0..B-1) each new token belongs to."""
        rows = [i for i, query_len in enumerate(query_lens) for _ in range(query_len)]
        return torch.tensor(rows, dtype=torch.int64, device=self.device)

    def _attention_mask(
        self, query_positions: torch.Tensor, query_lens: list[int], context_lens: list[int]
    ) -> torch.Tensor | None:
        """[B, 1, Q * G, L] additive causal (and sliding-window) mask in the model's dtype (0 or -inf, so no
        layer converts it); None when every query may see all L positions."""
        max_context_len = max(context_lens)
        window = self.config.sliding_window
        if window is not None and max_context_len <= window:
            window = None  # every query sees its whole context
        if max(query_lens) == 1 and min(context_lens) == max_context_len and window is None:
            return None
        key_positions = torch.arange(max_context_len, device=self.device)  # [L]
        query_positions = query_positions[:, :, None]  # [B, Q, 1]
        allowed = key_positions <= query_positions  # [B, Q, L]
        if window is not None:
            allowed &= key_positions > query_positions - window
        allowed = allowed.repeat_interleave(self.config.num_kv_groups, dim=1)[:, None]  # [B, 1, Q * G, L]
        mask = torch.zeros(allowed.shape, dtype=self.model.dtype, device=self.device)
        return mask.masked_fill_(~allowed, float("-inf"))
