"""Sparse mixture-of-experts feed-forward (Mixtral, Qwen2-MoE) with router statistics.

Each token goes to the `num_experts_per_tok` experts with the highest softmax router probability,
and their outputs are summed weighted by those probabilities (renormalized to sum to 1 when
`norm_topk_prob`: always for Mixtral, per checkpoint for Qwen2-MoE). Qwen2-MoE adds an always-on
shared expert scaled by a sigmoid gate.

Tokens are sorted by expert so each expert runs one matmul over all its tokens, and experts that no
token chose are skipped: a decode step touches only `num_experts_per_tok` experts per layer. The
experts' matrices are stacked parameters as checkpoints give them; a quantized model holds one
quantized layer per expert matrix instead (`quantize_experts`), the stacked copy dropped.

Router statistics accumulate across forward passes until `reset_router_stats()`, so routing collapse
(a few experts taking most tokens) shows up over a whole generation, not only its last step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from runtime.config import ModelConfig
from runtime.model.layers.feed_forward import FeedForward


@dataclass(frozen=True)
class RouterStats:
    """How one MoE layer routed the tokens seen since the last reset.

    Attributes:
        expert_fraction: [E] f_i, the share of (token, slot) assignments that went to expert i; sums to 1.
        mean_router_prob: [E] P_i, the router's softmax probability of expert i averaged over tokens.
        num_tokens: tokens routed.
    """

    expert_fraction: torch.Tensor
    mean_router_prob: torch.Tensor
    num_tokens: int

    @property
    def load_balance(self) -> float:
        """Switch-Transformer balance score `E * sum_i f_i * P_i`: 1.0 when uniform, up to E when collapsed."""
        num_experts = self.expert_fraction.numel()
        return float(num_experts * (self.expert_fraction * self.mean_router_prob).sum())


class SparseMoE(nn.Module):
    """Top-k routed experts, plus an optional sigmoid-gated shared expert.

    Args:
        config: reads `num_experts`, `num_experts_per_tok`, `moe_intermediate_size` (falling back to
            `intermediate_size`, as Mixtral states it), `norm_topk_prob` and
            `shared_expert_intermediate_size`.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        hidden = config.hidden_size
        expert_size = config.moe_intermediate_size or config.intermediate_size
        self.num_experts = config.num_experts
        self.num_experts_per_tok = config.num_experts_per_tok
        self.norm_topk_prob = config.norm_topk_prob
        self.router = nn.Parameter(torch.empty(self.num_experts, hidden))  # [E, H]
        self.experts_gate_up = nn.Parameter(torch.empty(self.num_experts, 2 * expert_size, hidden))  # [E, 2I, H]
        self.experts_down = nn.Parameter(torch.empty(self.num_experts, hidden, expert_size))  # [E, H, I]
        #: Each expert's quantized gate/up and down layers, where they replace the stacked parameters.
        self.gate_up_layers: nn.ModuleList | None = None
        self.down_layers: nn.ModuleList | None = None
        self.shared_expert: FeedForward | None = None
        self.shared_expert_gate: nn.Parameter | None = None
        if config.shared_expert_intermediate_size:
            self.shared_expert = FeedForward(hidden, config.shared_expert_intermediate_size)
            self.shared_expert_gate = nn.Parameter(torch.empty(1, hidden))  # [1, H]
        self.reset_router_stats()

    def quantize_experts(self, layer_of: Callable[[str, nn.Linear], nn.Module | None], prefix: str) -> None:
        """Replace the stacked expert matrices by one layer each, `layer_of(prefix + "experts_gate_up.{e}" (or
        "experts_down.{e}"), a linear over the expert's matrix)`; all or none: where `layer_of` keeps any
        expert's matrix, the experts stay dense. Done once."""
        if self.gate_up_layers is not None:
            return
        layers: dict[str, list[nn.Module]] = {"experts_gate_up": [], "experts_down": []}
        for expert in range(self.num_experts):
            for name, stacked in (("experts_gate_up", self.experts_gate_up), ("experts_down", self.experts_down)):
                with torch.device("meta"):
                    linear = nn.Linear(stacked.shape[2], stacked.shape[1], bias=False)
                linear.weight = nn.Parameter(stacked[expert], requires_grad=False)
                layer = layer_of(f"{prefix}{name}.{expert}", linear)
                if layer is None:
                    return
                layers[name].append(layer)
        self.gate_up_layers = nn.ModuleList(layers["experts_gate_up"])
        self.down_layers = nn.ModuleList(layers["experts_down"])
        del self.experts_gate_up, self.experts_down

    def reset_router_stats(self) -> None:
        """Forget the tokens routed so far."""
        self._routed_counts: torch.Tensor | None = None  # [E] float32
        self._router_prob_sums: torch.Tensor | None = None  # [E] float32
        self._num_routed_tokens = 0

    def router_stats(self) -> RouterStats:
        """Routing since the last reset (all zeros before any token)."""
        if self._routed_counts is None or self._router_prob_sums is None:
            zeros = torch.zeros(self.num_experts)
            return RouterStats(zeros, zeros.clone(), 0)
        return RouterStats(
            expert_fraction=self._routed_counts / self._routed_counts.sum(),
            mean_router_prob=self._router_prob_sums / self._num_routed_tokens,
            num_tokens=self._num_routed_tokens,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = F.linear(x, self.router).float().softmax(dim=-1)  # [T, E]
        top_probs, top_ids = probs.topk(self.num_experts_per_tok, dim=-1)  # [T, K] each
        if self.norm_topk_prob:
            top_probs = top_probs / top_probs.sum(dim=-1, keepdim=True)
        counts = torch.bincount(top_ids.flatten(), minlength=self.num_experts)  # [E]
        self._record(probs, counts)
        out = self._run_experts(x, top_ids, top_probs, counts.tolist())
        if self.shared_expert is not None and self.shared_expert_gate is not None:
            out = out + torch.sigmoid(F.linear(x, self.shared_expert_gate)) * self.shared_expert(x)
        return out

    def _record(self, probs: torch.Tensor, counts: torch.Tensor) -> None:
        if self._routed_counts is None or self._router_prob_sums is None:
            self._routed_counts = torch.zeros(self.num_experts, device=probs.device)
            self._router_prob_sums = torch.zeros(self.num_experts, device=probs.device)
        self._routed_counts += counts
        self._router_prob_sums += probs.sum(dim=0)
        self._num_routed_tokens += probs.shape[0]

    def _run_experts(
        self, x: torch.Tensor, top_ids: torch.Tensor, top_probs: torch.Tensor, counts: list[int]
    ) -> torch.Tensor:
        """Weighted sum of each token's chosen experts, one matmul pair per expert that has tokens."""
        order = top_ids.flatten().argsort(stable=True)  # [T * K] assignments grouped by expert
        token_rows = order // self.num_experts_per_tok  # [T * K] the token of each sorted assignment
        sorted_x = x.index_select(0, token_rows)  # [T * K, H]
        outputs = []
        start = 0
        for expert, count in enumerate(counts):
            if count == 0:
                continue
            rows = sorted_x[start : start + count]
            if self.gate_up_layers is not None and self.down_layers is not None:
                gate, up = self.gate_up_layers[expert](rows).chunk(2, dim=-1)
                outputs.append(self.down_layers[expert](F.silu(gate) * up))
            else:
                gate, up = F.linear(rows, self.experts_gate_up[expert]).chunk(2, dim=-1)
                outputs.append(F.linear(F.silu(gate) * up, self.experts_down[expert]))
            start += count
        weighted = torch.cat(outputs) * top_probs.flatten()[order, None]  # [T * K, H] float32
        out = torch.zeros(x.shape, dtype=weighted.dtype, device=x.device)  # [T, H]
        return out.index_add_(0, token_rows, weighted).to(x.dtype)
