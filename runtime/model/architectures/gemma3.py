"""The Gemma 3 text decoder (Gemma 3 270M, 1B and the text tower of the larger ones) over a paged KV cache.

Gemma 3 is the Llama decoder with five changes, each from its transformers implementation:
- embeddings are multiplied by sqrt(hidden_size) (in the activation dtype);
- every sublayer has a norm before and after it ("sandwich" norms), all `x * (1 + w)` RMSNorms,
  whose `1 +` the load hook folds into the weights (`runtime.model.architectures.checkpoint`);
- queries and keys are RMS-normalized per head, and scores scaled by `query_pre_attn_scalar ** -0.5`;
- the feed-forward gate is GeGLU (tanh-approximated GELU);
- local layers (`config.local_layers`) see the last `local_window` positions and rotate with their
  own rope base (`local_rope_theta`, unscaled); the others are global, with `rope_theta` and its scaling.

The runner's mask is plain causal (the config has no model-wide `sliding_window`); local layers get
theirs from `with_sliding_window`, built once per pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from runtime.config import ModelConfig
from runtime.model.architectures.llama import Attention, Transformer
from runtime.model.layers.attention import AttentionMetadata, with_sliding_window
from runtime.model.layers.feed_forward import FeedForward
from runtime.model.layers.rmsnorm import RMSNorm
from runtime.model.layers.rotary import RotaryEmbedding

if TYPE_CHECKING:
    from runtime.model.decode_plan import DecodePlan


class Gemma3Block(nn.Module):
    """Decoder layer with norms before and after attention and the feed-forward, each with a residual."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        hidden, eps = config.hidden_size, config.rms_norm_eps
        self.attn_norm = RMSNorm(hidden, eps)
        self.attn = Attention(config)
        self.post_attn_norm = RMSNorm(hidden, eps)
        self.ffn_norm = RMSNorm(hidden, eps)
        self.ffn = FeedForward(hidden, config.intermediate_size, config.hidden_act)
        self.post_ffn_norm = RMSNorm(hidden, eps)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        signed_sin: torch.Tensor,
        kv_cache: torch.Tensor,
        metadata: AttentionMetadata,
    ) -> torch.Tensor:
        x = x + self.post_attn_norm(self.attn(self.attn_norm(x), cos, signed_sin, kv_cache, metadata))
        return x + self.post_ffn_norm(self.ffn(self.ffn_norm(x)))


class Gemma3Transformer(Transformer):
    """Gemma 3's decoder: `Transformer`'s interface, local and global layers (see the module docstring)."""

    block_class = Gemma3Block

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.local_rotary = RotaryEmbedding(config, theta=config.local_rope_theta)
        self.local_layers = frozenset(config.local_layers)

    def forward(
        self,
        token_ids: torch.Tensor,
        positions: torch.Tensor,
        kv_caches: Sequence[torch.Tensor],
        metadata: AttentionMetadata,
        logits_index: torch.Tensor | None = None,
        plan: DecodePlan | None = None,
    ) -> torch.Tensor:
        """See `Transformer.forward`."""
        x = self.embed(token_ids)  # [T, H]
        x = x * torch.tensor(self.config.hidden_size**0.5, dtype=x.dtype)
        global_rope = self.rotary(positions, x.dtype)
        local_rope = self.local_rotary(positions, x.dtype)
        local_metadata = metadata
        if self.config.local_window is not None:
            local_metadata = with_sliding_window(
                metadata,
                positions,
                window=self.config.local_window,
                num_kv_groups=self.config.num_kv_groups,
                dtype=x.dtype,
            )
        if plan is not None:
            (cos, signed_sin), (local_cos, local_sin) = global_rope, local_rope
            x, pending = plan.run(x, cos, signed_sin, kv_caches, metadata, local=(local_cos, local_sin, local_metadata))
            if pending is not None:
                x = x + pending
        else:
            for i, (layer, kv_cache) in enumerate(zip(self.layers, kv_caches, strict=True)):
                if i in self.local_layers:
                    x = layer(x, *local_rope, kv_cache, local_metadata)
                else:
                    x = layer(x, *global_rope, kv_cache, metadata)
        if logits_index is not None:
            x = x.index_select(0, logits_index)  # [N, H]
        logits = self.lm_head(self.norm(x)).float()  # [N, V]
        cap = self.config.final_logit_softcapping
        return logits if cap is None else torch.tanh(logits / cap) * cap
