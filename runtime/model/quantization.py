"""Weight-only quantization: a state-dict rewrite plus a module swap, so the model has no branches.

`quantize(model, Quantization.INT8)` swaps the decoder layers' `nn.Linear`s for `Int8Linear` (int8
weights, one bfloat16 scale per output row); `Quantization.INT4` swaps them for `Int4Linear` (4-bit
codes with a bfloat16 scale and offset per group of 32 inputs). Group-wise 4-bit is the layout of
GGUF's Q4_1, so a Q4_1 checkpoint (the embedded SmolLM2) keeps its exact codes and loses only
bfloat16 rounding of its scales.

The output head (the largest matrix of a small model, tied to the embeddings) becomes a
`RescoredHead` in both modes: 4-bit (else 8-bit) logits for the whole vocabulary, then the top
`NUM_RESCORED_LOGITS` recomputed exactly from the bfloat16 weights. A plain quantized head raises
the KL divergence from fp32 on SmolLM2 (its embeddings are Q8_0); rescoring brings it back near a
bfloat16 head's while keeping most of the quantized head's speed (benchmarks/forward.py).

Activations are bfloat16. Small matmuls (decode: one row per sequence) run torch's weight-only CPU
kernels, which read 1/4 (int8) or 1/8 (int4) of the fp32 bytes but cost one GEMV per row, so from
`MAX_QUANTIZED_KERNEL_ROWS` rows on, and in every prefill pass (the model runner sets each layer's
`uses_dense_weights`), the dense bfloat16 kernel runs on the weights dequantized once, on first use,
and kept: prefill then runs at bfloat16 speed, for the memory of a bfloat16 copy of the weights, and
a prompt is computed by one kernel however the scheduler splits it into passes. MoE routers, the
shared-expert gate and the experts are plain parameters and stay unquantized.

Where the compiled kernels are built (`runtime.model.kernels`, AVX-512 VNNI), `Int4Linear` runs them
instead of torch's int4 kernel: activations quantized to int16 per group of 32 (as exact as bfloat16;
int8 ones, llama.cpp's Q8_1, tripled the decode path's KL divergence on SmolLM2), integer dot
products, for single rows (`MAX_COMPILED_KERNEL_ROWS`: past one row torch's kernel is faster). torch's
kernel stays the reference the tests compare against, and the fallback (with a logged reason).
"""

from __future__ import annotations

import enum
import logging
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from runtime.errors import UnsupportedModelError
from runtime.model import kernels

logger = logging.getLogger(__name__)

#: Up to this many rows the quantized kernels beat the dense bfloat16 matmul (crossover measured at 8-12).
MAX_QUANTIZED_KERNEL_ROWS = 8
#: Up to this many rows `Int4Linear` runs the compiled kernel: it reads the weights faster than torch's
#: kernel (1.05-1.2x at one row) but does more arithmetic per row (0.6-0.8x from two rows on).
MAX_COMPILED_KERNEL_ROWS = 1
#: Inputs sharing one 4-bit scale and offset (GGUF Q4_0/Q4_1 blocks are 32 wide).
INT4_GROUP_SIZE = 32
#: The int4 CPU kernel packs output rows in tiles of 16.
_INT4_ROW_TILE = 16
#: Head logits recomputed exactly per row: far more than top-k / top-p sampling ever keeps.
NUM_RESCORED_LOGITS = 64

ModuleT = TypeVar("ModuleT", bound=nn.Module)


class Quantization(enum.Enum):
    """How linear weights are stored (activations are then bfloat16)."""

    NONE = "none"
    INT8 = "int8"
    INT4 = "int4"


class QuantizedLinear(nn.Module):
    """A weight-only quantized linear: the kernel choice, and the dense bfloat16 weight rebuilt on first use.

    Attributes:
        uses_dense_weights: multiply by the dense weight whatever the row count. The model runner sets
            it for prefill passes, so a prompt computes alike in one pass or several; otherwise up to
            `MAX_QUANTIZED_KERNEL_ROWS` rows run the weight-only kernel.
    """

    bias: torch.Tensor | None

    def __init__(self) -> None:
        super().__init__()
        self._dense: torch.Tensor | None = None
        self.uses_dense_weights = False

    def dequantize(self) -> torch.Tensor:
        """The [N, K] bfloat16 weight the stored codes stand for."""
        raise NotImplementedError

    def runs_kernel(self, x: torch.Tensor) -> bool:
        """Whether `x` ([rows, K]) goes through the weight-only kernel rather than the dense weight."""
        return x.shape[0] <= MAX_QUANTIZED_KERNEL_ROWS and not self.uses_dense_weights

    def dense_linear(self, x: torch.Tensor) -> torch.Tensor:
        if self._dense is None:
            self._dense = self.dequantize()  # [N, K] bfloat16
        return F.linear(x, self._dense)


class Int8Linear(QuantizedLinear):
    """A linear layer with int8 weights and one bfloat16 scale per output row.

    Args:
        weight: [N, K] int8.
        scales: [N] bfloat16, so that `weight * scales[:, None]` approximates the original weight.
        bias: [N] bfloat16 or None.
    """

    weight: torch.Tensor
    scales: torch.Tensor

    def __init__(self, weight: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("scales", scales)
        self.register_buffer("bias", bias)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        """Quantize `linear`'s weight symmetrically per output row (absmax / 127)."""
        weight = linear.weight.detach().float()
        scales = (weight.abs().amax(dim=1).clamp(min=1e-12) / 127).to(torch.bfloat16)  # [N]
        quantized = (weight / scales.float()[:, None]).round().clamp(-127, 127).to(torch.int8)  # [N, K]
        bias = None if linear.bias is None else linear.bias.detach().to(torch.bfloat16)
        return cls(quantized.contiguous(), scales, bias)

    def dequantize(self) -> torch.Tensor:
        return self.weight.to(torch.bfloat16) * self.scales[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.runs_kernel(x):
            out = torch._weight_int8pack_mm(x, self.weight, self.scales)
        else:
            out = self.dense_linear(x)
        return out if self.bias is None else out + self.bias


class Int4Linear(QuantizedLinear):
    """A linear layer with 4-bit weights, a bfloat16 scale and offset per group of `INT4_GROUP_SIZE` inputs.

    A weight is `(q - 8) * scale + offset` with q in [0, 15] (torch's int4 kernel convention).
    The kernel's packed layout is opaque, so the codes are also kept two per byte (`nibbles`) with
    per-group `scales` and `bases` (`offset - 8 * scale`) for the dense prefill path: about one byte
    per weight in all, half of bfloat16.

    Args:
        packed: the kernel's packing of the [N, K] codes.
        scales_and_offsets: [K / g, N, 2] bfloat16, the kernel's per-group parameters.
        nibbles: [N, K / 2] uint8, code of input 2j in the low nibble of byte j, of input 2j + 1 in the high.
        scales: [N, K / g, 1] bfloat16.
        bases: [N, K / g, 1] bfloat16, so that a weight is `q * scale + base`.
        bias: [N] bfloat16 or None.
    """

    packed: torch.Tensor
    scales_and_offsets: torch.Tensor
    nibbles: torch.Tensor
    scales: torch.Tensor
    bases: torch.Tensor

    def __init__(
        self,
        packed: torch.Tensor,
        scales_and_offsets: torch.Tensor,
        nibbles: torch.Tensor,
        scales: torch.Tensor,
        bases: torch.Tensor,
        bias: torch.Tensor | None,
    ) -> None:
        super().__init__()
        self.register_buffer("packed", packed)
        self.register_buffer("scales_and_offsets", scales_and_offsets)
        self.register_buffer("nibbles", nibbles)
        self.register_buffer("scales", scales)
        self.register_buffer("bases", bases)
        self.register_buffer("bias", bias)
        #: Run the compiled kernel (it takes every shape `fits` does) rather than torch's int4 kernel.
        self.uses_compiled_kernel = kernels.has_compiled_kernels()

    @staticmethod
    def fits(linear: nn.Linear) -> bool:
        """Whether the int4 kernel takes this shape (rows in tiles of 16, inputs in whole groups)."""
        num_rows, num_inputs = linear.weight.shape
        return num_rows % _INT4_ROW_TILE == 0 and num_inputs % INT4_GROUP_SIZE == 0

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int4Linear:
        """Quantize `linear`'s weight per group: 15 even steps from the group's minimum to its maximum."""
        weight = linear.weight.detach().float()
        num_rows, num_inputs = weight.shape
        groups = weight.view(num_rows, num_inputs // INT4_GROUP_SIZE, INT4_GROUP_SIZE)  # [N, K / g, g]
        minimum, maximum = groups.amin(dim=-1), groups.amax(dim=-1)  # [N, K / g]
        scales = ((maximum - minimum) / 15).clamp(min=1e-12)
        codes = ((groups - minimum[..., None]) / scales[..., None]).round().clamp(0, 15).to(torch.int32)
        codes = codes.view(num_rows, num_inputs)  # [N, K]
        offsets = minimum + 8 * scales  # the kernel computes (q - 8) * scale + offset
        scales_and_offsets = torch.stack((scales, offsets), dim=-1).transpose(0, 1).to(torch.bfloat16)
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
        nibbles = (codes[:, 0::2] | (codes[:, 1::2] << 4)).to(torch.uint8)  # [N, K / 2]
        dense_scales, dense_offsets = scales_and_offsets.transpose(0, 1).float().unbind(-1)  # [N, K / g] each
        bases = (dense_offsets - 8 * dense_scales).to(torch.bfloat16)[..., None]  # [N, K / g, 1]
        bias = None if linear.bias is None else linear.bias.detach().to(torch.bfloat16)
        return cls(
            packed, scales_and_offsets.contiguous(), nibbles, dense_scales.to(torch.bfloat16)[..., None], bases, bias
        )

    def dequantize(self) -> torch.Tensor:
        num_rows = self.nibbles.shape[0]
        codes = torch.stack((self.nibbles & 15, self.nibbles >> 4), dim=-1).view(num_rows, -1, INT4_GROUP_SIZE)
        weight = torch.addcmul(self.bases, codes.to(torch.bfloat16), self.scales)
        return weight.view(num_rows, -1)  # [N, K]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] <= MAX_COMPILED_KERNEL_ROWS and self.uses_compiled_kernel and not self.uses_dense_weights:
            out = kernels.int4_linear(x.contiguous(), self.nibbles, self.scales, self.bases)
        elif self.runs_kernel(x):
            out = torch.ops.aten._weight_int4pack_mm_for_cpu(x, self.packed, INT4_GROUP_SIZE, self.scales_and_offsets)
        else:
            out = self.dense_linear(x)
        return out if self.bias is None else out + self.bias


class RescoredHead(nn.Module):
    """An output head: approximate logits for every token, exact bfloat16 logits for each row's top candidates.

    The quantized matmul reads a fraction of the bfloat16 weight (an int4 head costs ~1/5 of the
    bfloat16 one at one row on this CPU); its error matters only for tokens that can be chosen, so
    the `NUM_RESCORED_LOGITS` largest logits of each row are recomputed from the bfloat16 weight
    (which tied models share with the embeddings). Beyond `MAX_QUANTIZED_KERNEL_ROWS` rows (prefill,
    wide batches) the dense bfloat16 head is as fast, and exact.

    Args:
        linear: the bfloat16 head ([V, H] weight, no bias), kept by reference.
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.approximate = Int4Linear.from_linear(linear) if Int4Linear.fits(linear) else Int8Linear.from_linear(linear)
        self.weight = linear.weight
        self.num_rescored = min(NUM_RESCORED_LOGITS, linear.weight.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > MAX_QUANTIZED_KERNEL_ROWS:
            return F.linear(x, self.weight)
        logits = self.approximate(x)  # [N, V]
        top_ids = logits.topk(self.num_rescored, dim=-1).indices  # [N, k]
        exact = torch.bmm(self.weight[top_ids], x[:, :, None])[..., 0]  # [N, k]
        return logits.scatter_(-1, top_ids, exact)


def quantize(model: ModuleT, quantization: Quantization, *, head_names: tuple[str, ...] = ("lm_head",)) -> ModuleT:
    """Swap `model`'s `nn.Linear` modules for quantized ones, in place; returns `model`.

    Args:
        model: a bfloat16 model.
        quantization: `NONE` leaves it as is; `INT8` makes linears `Int8Linear`; `INT4` makes them
            `Int4Linear`, or `Int8Linear` for shapes the int4 kernel does not take (rows not a
            multiple of 16, inputs not of 32). Either way output heads become `RescoredHead`.
        head_names: fully qualified names of the output heads (bias-free linears).

    Raises:
        UnsupportedModelError: quantizing a model whose parameters are not bfloat16 (the kernels are
            fast only with bfloat16 activations: measured ~10x slower with float32 ones).
    """
    if quantization is Quantization.NONE:
        return model
    dtypes = {parameter.dtype for parameter in model.parameters() if parameter.is_floating_point()}
    if dtypes != {torch.bfloat16}:
        found = ", ".join(sorted(map(str, dtypes)))
        raise UnsupportedModelError(f"{quantization.value} quantization needs a bfloat16 model, not {found}")
    if quantization is Quantization.INT4 and not kernels.has_compiled_kernels():
        logger.warning("int4 layers run torch's kernel: %s", kernels.KERNELS_UNAVAILABLE_REASON)
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, nn.Linear):
                continue
            if (f"{parent_name}.{name}" if parent_name else name) in head_names:
                setattr(parent, name, RescoredHead(child))
            elif quantization is Quantization.INT4 and Int4Linear.fits(child):
                setattr(parent, name, Int4Linear.from_linear(child))
            else:
                setattr(parent, name, Int8Linear.from_linear(child))
    return model


def quantized_layers(model: nn.Module) -> list[QuantizedLinear]:
    """`model`'s weight-only linears, head approximations included: those whose kernel choice a pass sets."""
    return [module for module in model.modules() if isinstance(module, QuantizedLinear)]
