"""Decode and verify passes without module dispatch: the decoder layers as direct calls to the compiled kernels.

A SmolLM2-135M decode step calls about ten modules a layer, and their dispatch (`Module.__call__`,
attribute lookups, each layer's choice of path) costs ~45 µs a layer on a 2-core CPU, about a fifth
of a one-row step. Where every layer is the plain `Block` (dense feed-forward), or every layer Gemma 3's
`Gemma3Block` (norms after attention and the feed-forward too, local layers with their own rope and
window), over 4-bit or block-code linears on the compiled kernels and the compiled elementwise operations,
`DecodePlan` makes the same kernel calls in the same order on the same tensors, so its logits are
bitwise the modules' (tested). Anything else keeps the modules: other blocks (sparse MoE), torch's or
int8 kernels, prefill passes (dense weights, SDPA), and the SDPA attention path
(`ModelRunner.compiled_attention` off).

The plan reads the layers' weights when the runner is made; it holds no tensor of its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch

from runtime.model.architectures.gemma3 import Gemma3Block, Gemma3Transformer
from runtime.model.architectures.llama import Block, Transformer
from runtime.model.block_codes import BlockCodeLinear
from runtime.model.kernels import attention, binding, elementwise
from runtime.model.layers.feed_forward import FeedForward
from runtime.model.quantization import Int4Linear

if TYPE_CHECKING:
    from collections.abc import Sequence

    from runtime.model.layers.attention import AttentionMetadata
    from runtime.model.layers.rmsnorm import RMSNorm


class _Int4Linear(NamedTuple):
    """An `Int4Linear`'s arguments to `binding.int4_linear`, and its bias."""

    tiles: torch.Tensor
    scales: torch.Tensor
    bases: torch.Tensor
    activation_bits: int
    fifth_bits: torch.Tensor | None
    bias: torch.Tensor | None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = binding.int4_linear(
            x.contiguous(), self.tiles, self.scales, self.bases, self.activation_bits, self.fifth_bits
        )
        return out if self.bias is None else out + self.bias


class _BlockCodeLinear(NamedTuple):
    """A `BlockCodeLinear`'s arguments to `binding.block_linear`, and its bias."""

    tiles: torch.Tensor
    scales: torch.Tensor
    bases: torch.Tensor | None
    block_size: int
    bias: torch.Tensor | None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = binding.block_linear(x.contiguous(), self.tiles, self.scales, self.bases, self.block_size)
        return out if self.bias is None else out + self.bias


_Linear = _Int4Linear | _BlockCodeLinear

#: A norm's weight and epsilon.
_Norm = tuple[torch.Tensor, float]


class _Layer(NamedTuple):
    """What one `Block` or `Gemma3Block` passes its kernels: norm weights and epsilons, linears, head shapes."""

    attn_norm: _Norm
    qkv: _Linear
    qk_norms: tuple[_Norm, _Norm] | None
    num_heads: int
    num_kv_heads: int
    head_dim: int
    scale: float
    o_proj: _Linear
    ffn_norm: _Norm
    gate_up: _Linear
    activation: str
    down: _Linear
    post_norms: tuple[_Norm, _Norm] | None  # Gemma 3's norms of the attention and feed-forward outputs
    local: bool  # a Gemma 3 local layer: the local rope and window


class DecodePlan:
    """The decoder layers of a `Transformer` as kernel calls (see the module docstring); `of` builds one."""

    def __init__(self, layers: list[_Layer]) -> None:
        self._layers = layers

    @classmethod
    def of(cls, model: Transformer) -> DecodePlan | None:
        """The plan of `model`'s layers, or None where one of them is not the plain block (in a Gemma 3,
        Gemma 3's block) over the compiled kernels (the modules then run every pass)."""
        dtype, device = model.dtype, model.embed.weight.device
        gemma = type(model) is Gemma3Transformer
        local_layers = model.local_layers if isinstance(model, Gemma3Transformer) else frozenset()
        if (
            (type(model).forward is not Transformer.forward and not gemma)
            or not binding.has_compiled_kernels()
            or not attention.runs_compiled(dtype, device)
            or not elementwise.runs_compiled(torch.empty(0, dtype=dtype, device=device))
        ):
            return None
        layers = []
        for index, block in enumerate(model.layers):
            if type(block) is not (Gemma3Block if gemma else Block) or type(block.ffn) is not FeedForward:
                return None
            attn, ffn = block.attn, block.ffn
            qkv, o_proj, gate_up, down = (_linear(module) for module in (attn.qkv, attn.o_proj, ffn.gate_up, ffn.down))
            if qkv is None or o_proj is None or gate_up is None or down is None:
                return None
            if ffn.hidden_act not in elementwise.ACTIVATION_CODES:
                return None
            qk_norms = None
            if attn.q_norm is not None and attn.k_norm is not None:
                qk_norms = (_norm(attn.q_norm), _norm(attn.k_norm))
            scale = attn.head_dim**-0.5 if attn.scale is None else attn.scale
            post_norms = None
            if isinstance(block, Gemma3Block):
                post_norms = (_norm(block.post_attn_norm), _norm(block.post_ffn_norm))
            layers.append(
                _Layer(
                    _norm(block.attn_norm),
                    qkv,
                    qk_norms,
                    attn.num_heads,
                    attn.num_kv_heads,
                    attn.head_dim,
                    scale,
                    o_proj,
                    _norm(block.ffn_norm),
                    gate_up,
                    ffn.hidden_act,
                    down,
                    post_norms,
                    index in local_layers,
                )
            )
        return cls(layers)

    def run(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        signed_sin: torch.Tensor,
        kv_caches: Sequence[torch.Tensor],
        metadata: AttentionMetadata,
        local: tuple[torch.Tensor, torch.Tensor, AttentionMetadata] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`Transformer.forward`'s layer loop over a decode or verify pass (`metadata` of the compiled
        attention): the residual stream and the last feed-forward output (Gemma 3: normed) not yet added
        to it. `local`: the rope (cos, signed sin) and metadata of Gemma 3's local layers."""
        assert metadata.token_sequences is not None, "the plan runs the compiled attention only"
        num_tokens = x.shape[0]
        slot_table = metadata.context_slots.view(metadata.batch_size, metadata.max_context_len)
        pending: torch.Tensor | None = None
        for layer, kv_cache in zip(self._layers, kv_caches, strict=True):
            layer_cos, layer_sin, layer_metadata = (cos, signed_sin, metadata)
            if layer.local:
                assert local is not None, "Gemma 3's local layers need their rope and metadata"
                layer_cos, layer_sin, layer_metadata = local
            weight, eps = layer.attn_norm
            if pending is None:
                normed = elementwise.rms_norm(x, weight, eps)
            else:
                x, normed = elementwise.add_rms_norm(x, pending, weight, eps)
            heads, kv_heads, head_dim = layer.num_heads, layer.num_kv_heads, layer.head_dim
            qkv = layer.qkv(normed)  # [T, (H + 2 KVH) * D]
            num_rotated = heads + kv_heads
            queries_keys = qkv[:, : num_rotated * head_dim].view(num_tokens, num_rotated, head_dim)
            if layer.qk_norms is not None:
                (q_weight, q_eps), (k_weight, k_eps) = layer.qk_norms
                queries_keys = torch.cat(
                    (
                        elementwise.rms_norm(queries_keys[:, :heads], q_weight, q_eps),
                        elementwise.rms_norm(queries_keys[:, heads:], k_weight, k_eps),
                    ),
                    1,
                )
            rotated = elementwise.rope(queries_keys, layer_cos, layer_sin)  # [T, H + KVH, D]
            values = qkv[:, num_rotated * head_dim :].view(num_tokens, kv_heads, head_dim)
            out = attention.paged_attention(
                rotated[:, :heads],
                rotated[:, heads:],
                values,
                kv_cache,
                metadata.slot_mapping,
                slot_table,
                metadata.token_sequences,
                metadata.token_positions,
                scale=layer.scale,
                window=layer_metadata.window,
            )
            attended = layer.o_proj(out)
            if layer.post_norms is not None:
                attended = elementwise.rms_norm(attended, *layer.post_norms[0])
            weight, eps = layer.ffn_norm
            x, normed = elementwise.add_rms_norm(x, attended, weight, eps)
            pending = layer.down(elementwise.gated_activation(layer.gate_up(normed), layer.activation))
            if layer.post_norms is not None:
                pending = elementwise.rms_norm(pending, *layer.post_norms[1])
        return x, pending


def _norm(norm: RMSNorm) -> tuple[torch.Tensor, float]:
    return norm.weight, norm.eps


def _linear(module: torch.nn.Module) -> _Linear | None:
    """`module`'s kernel arguments, where it is an `Int4Linear` or a `BlockCodeLinear` on the compiled kernel."""
    if type(module) is Int4Linear and module.uses_compiled_kernel:
        return _Int4Linear(
            module.tiles, module.scales, module.bases, module.activation_bits, module.fifth_bits, module.bias
        )
    if type(module) is BlockCodeLinear and module.uses_compiled_kernel:
        return _BlockCodeLinear(module.tiles, module.scales, module.bases, module.block_size, module.bias)
    return None
