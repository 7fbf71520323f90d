"""The Llama-family decoder (Llama 2/3, SmolLM, Mistral, Qwen2/3, Phi-3, Mixtral, Qwen2/3-MoE) over a paged KV cache.

One model covers the family: architectures differ only in configuration (GQA, QKV bias, QK-norm, rope
scaling, sliding window, tied embeddings) and in the feed-forward block (dense, or sparse MoE). Checkpoint
quirks (Hugging Face names, separate or fused q/k/v and gate/up matrices, tied embeddings) are resolved by a
load hook (`runtime.model.architectures.checkpoint`) before the weights reach these modules, so `forward` has no
branches on where the weights came from. Tokens are packed: activations are [T, H] for the T new
tokens of every sequence in the batch, and only attention sees sequences apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from runtime.config import ModelConfig
from runtime.model.architectures.checkpoint import rewrite_hf_state_dict
from runtime.model.layers.attention import AttentionMetadata, paged_attention
from runtime.model.layers.feed_forward import FeedForward
from runtime.model.layers.moe import RouterStats, SparseMoE
from runtime.model.layers.rmsnorm import RMSNorm
from runtime.model.layers.rotary import RotaryEmbedding, apply_rope

if TYPE_CHECKING:
    from runtime.model.decode_plan import DecodePlan


class Attention(nn.Module):
    """Grouped-query self-attention with q/k/v fused into one projection (`qkv`, rows q then k then v).

    With `config.has_qk_norm` each query and key head is RMS-normalized before RoPE (Qwen3, Gemma 3);
    `config.query_pre_attn_scalar` replaces head_dim in the score scale (Gemma 3).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        self.num_kv_heads = config.num_kv_heads
        self.head_dim = config.head_dim
        qkv_size = (config.num_heads + 2 * config.num_kv_heads) * config.head_dim
        self.qkv = nn.Linear(config.hidden_size, qkv_size, bias=config.attention_bias)
        self.o_proj = nn.Linear(config.num_heads * config.head_dim, config.hidden_size, bias=False)
        self.q_norm = RMSNorm(config.head_dim, config.rms_norm_eps) if config.has_qk_norm else None
        self.k_norm = RMSNorm(config.head_dim, config.rms_norm_eps) if config.has_qk_norm else None
        self.scale = config.query_pre_attn_scalar**-0.5 if config.query_pre_attn_scalar else None

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        signed_sin: torch.Tensor,
        kv_cache: torch.Tensor,
        metadata: AttentionMetadata,
    ) -> torch.Tensor:
        num_tokens, num_rotated = x.shape[0], self.num_heads + self.num_kv_heads
        qkv = self.qkv(x)  # [T, (H + 2 KVH) * D]
        queries_keys = qkv[:, : num_rotated * self.head_dim].view(num_tokens, num_rotated, self.head_dim)
        if self.q_norm is not None and self.k_norm is not None:
            heads = self.num_heads
            queries_keys = torch.cat((self.q_norm(queries_keys[:, :heads]), self.k_norm(queries_keys[:, heads:])), 1)
        rotated = apply_rope(queries_keys, cos, signed_sin)  # [T, H + KVH, D]
        values = qkv[:, num_rotated * self.head_dim :].view(num_tokens, self.num_kv_heads, self.head_dim)  # [T, KVH, D]
        queries, keys = rotated[:, : self.num_heads], rotated[:, self.num_heads :]
        out = paged_attention(queries, keys, values, kv_cache, metadata, scale=self.scale)
        return self.o_proj(out)


class Block(nn.Module):
    """Pre-norm decoder layer: attention then feed-forward (dense or sparse MoE), each with a residual.

    Each residual add is left to the norm after it (`RMSNorm.add_and_norm`, one compiled call): the layer
    takes the residual stream with the previous layer's feed-forward output not yet added, and returns its
    own the same way.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.attn = Attention(config)
        self.ffn_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.ffn: FeedForward | SparseMoE = (
            SparseMoE(config)
            if config.is_moe
            else FeedForward(config.hidden_size, config.intermediate_size, config.hidden_act)
        )

    def forward(
        self,
        x: torch.Tensor,
        pending: torch.Tensor | None,
        cos: torch.Tensor,
        signed_sin: torch.Tensor,
        kv_cache: torch.Tensor,
        metadata: AttentionMetadata,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`(x + pending + attention, feed-forward output)`: the stream after attention and what to add to it.

        Args:
            x: [T, H] residual stream.
            pending: [T, H] the previous layer's feed-forward output, not yet in `x`; None for the first layer.
        """
        x, normed = self.attn_norm.add_and_norm(x, pending)
        x, normed = self.ffn_norm.add_and_norm(x, self.attn(normed, cos, signed_sin, kv_cache, metadata))
        return x, self.ffn(normed)


class Transformer(nn.Module):
    """Token ids of a batch in, float32 logits out, with K/V kept in a paged cache the caller owns.

    Other families subclass it with their own `block_class` (and forward, where they differ).

    Build it with `runtime.model.architectures.build_model`, which loads Hugging Face-named weights. The
    `ModelRunner` turns a `ForwardBatch` into this module's inputs.

    Args:
        config: the architecture; `config.architecture` must be in `SUPPORTED_ARCHITECTURES`.

    Raises:
        UnsupportedModelError: a rope scaling type the model does not implement.
    """

    block_class: type[nn.Module] = Block

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        # Given an (uninitialized) weight, the embedding skips its random init: on the meta device that
        # init runs through torch's Python reference kernels, whose first import costs a second.
        self.embed = nn.Embedding(
            config.vocab_size, config.hidden_size, _weight=torch.empty(config.vocab_size, config.hidden_size)
        )
        self.rotary = RotaryEmbedding(config)
        self.layers = nn.ModuleList(self.block_class(config) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self._register_load_state_dict_pre_hook(self._load_hf_weights)

    def _load_hf_weights(self, state_dict: dict[str, torch.Tensor], prefix: str, *args: Any) -> None:
        rewrite_hf_state_dict(state_dict, self.config, prefix=prefix)

    @property
    def dtype(self) -> torch.dtype:
        """The activation dtype: that of the embedding table."""
        return self.embed.weight.dtype

    def forward(
        self,
        token_ids: torch.Tensor,
        positions: torch.Tensor,
        kv_caches: Sequence[torch.Tensor],
        metadata: AttentionMetadata,
        logits_index: torch.Tensor | None = None,
        plan: DecodePlan | None = None,
    ) -> torch.Tensor:
        """Score the new tokens of a batch, storing their K/V.

        Args:
            token_ids: [T] int64 new tokens, packed sequence after sequence.
            positions: [T] int64 position of each new token in its sequence.
            kv_caches: one [num_slots, 2, KVH, D] cache per layer (`KVCache.layers`).
            metadata: where each sequence's K/V lives (see `AttentionMetadata`).
            logits_index: [N] int64 rows of the new tokens to score; None scores all T.
            plan: runs the layers of a decode or verify pass as kernel calls (`DecodePlan.of(self)`;
                the same logits, bitwise); None: the modules run them.

        Returns:
            [N, vocab_size] float32 logits.
        """
        x, pending = self.embed(token_ids), None  # [T, H], and what the next norm adds to it
        cos, signed_sin = self.rotary(positions, x.dtype)
        if plan is not None:
            x, pending = plan.run(x, cos, signed_sin, kv_caches, metadata)
        else:
            for layer, kv_cache in zip(self.layers, kv_caches, strict=True):
                x, pending = layer(x, pending, cos, signed_sin, kv_cache, metadata)
        if logits_index is not None:
            x = x.index_select(0, logits_index)  # [N, H]
            pending = None if pending is None else pending.index_select(0, logits_index)
        return self.lm_head(self.norm.add_and_norm(x, pending)[1]).float()  # [N, V]

    def router_stats(self) -> list[RouterStats]:
        """Routing of each sparse-MoE layer since the last `reset_router_stats()`; empty for a dense model."""
        return [layer.ffn.router_stats() for layer in self.layers if isinstance(layer.ffn, SparseMoE)]

    def reset_router_stats(self) -> None:
        """Start counting routed tokens afresh in every MoE layer."""
        for layer in self.layers:
            if isinstance(layer.ffn, SparseMoE):
                layer.ffn.reset_router_stats()
