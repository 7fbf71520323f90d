"""Device-plane building blocks of the decoder: attention over the paged cache, RoPE, norms, feed-forwards."""

from runtime.model.layers.attention import AttentionMetadata, paged_attention
from runtime.model.layers.feed_forward import FeedForward
from runtime.model.layers.moe import RouterStats, SparseMoE
from runtime.model.layers.rmsnorm import RMSNorm
from runtime.model.layers.rotary import SUPPORTED_ROPE_TYPES, RotaryEmbedding, apply_rope, rope_inv_freq

__all__ = [
    "SUPPORTED_ROPE_TYPES",
    "AttentionMetadata",
    "FeedForward",
    "RMSNorm",
    "RotaryEmbedding",
    "RouterStats",
    "SparseMoE",
    "apply_rope",
    "paged_attention",
    "rope_inv_freq",
]
