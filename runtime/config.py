"""Model hyper-parameters, the one description every loader produces and every model consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Architectures the decoder implements (Hugging Face `model_type` names).
SUPPORTED_ARCHITECTURES = (
    "llama",
    "mistral",
    "qwen2",
    "mixtral",
    "qwen2_moe",
    "qwen3",
    "qwen3_moe",
    "phi3",
    "gemma3_text",
)


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of a decoder-only Llama-family model, dense or sparse-MoE.

    Dependent sizes (`head_dim`, `num_kv_groups`, `is_moe`) are derived, so loaders set only what the
    checkpoint states.
    """

    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    max_position_embeddings: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    #: Hugging Face `rope_scaling` dict (e.g. {"rope_type": "llama3", "factor": 8.0, ...}) or None.
    rope_scaling: dict[str, Any] | None = None
    head_dim_override: int | None = None
    tie_word_embeddings: bool = False
    #: Qwen2 puts a bias on the q/k/v projections.
    attention_bias: bool = False
    #: Window of every layer's attention (Mistral); Gemma 3's per-layer windows are `local_layers` below.
    sliding_window: int | None = None
    #: RMS-normalize each query and key head before RoPE (Qwen3, Gemma 3).
    has_qk_norm: bool = False
    #: Feed-forward gate activation: "silu" (SwiGLU) or "gelu_pytorch_tanh" (Gemma's GeGLU).
    hidden_act: str = "silu"
    #: Attention scores are scaled by this to the power -1/2 (Gemma 3); None: by head_dim.
    query_pre_attn_scalar: float | None = None
    # Gemma 3 interleaves local layers (a sliding window and their own rope base) with global ones.
    local_layers: tuple[int, ...] = ()
    local_window: int | None = None
    local_rope_theta: float = 10000.0
    #: Logits become `cap * tanh(logits / cap)` (Gemma); None: raw logits.
    final_logit_softcapping: float | None = None
    # Sparse MoE FFN (Mixtral, Qwen2-MoE); num_experts == 0 means a dense FFN.
    num_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    #: Qwen2-MoE: size of the always-on shared expert (0 = none).
    shared_expert_intermediate_size: int = 0
    #: Renormalize the top-k router probabilities so they sum to 1 (Mixtral: always; Qwen2-MoE: `norm_topk_prob`).
    norm_topk_prob: bool = True
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = field(default_factory=tuple)

    @property
    def head_dim(self) -> int:
        return self.head_dim_override or self.hidden_size // self.num_heads

    @property
    def num_kv_groups(self) -> int:
        return self.num_heads // self.num_kv_heads

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0
