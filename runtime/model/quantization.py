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
bfloat16 head's while keeping most of the quantized head's speed (benchmarks/forward.py). Only the
head's first pass quantizes activations to int8 (with the compiled kernels): its error stays out of
the rescored logits, so a greedy choice changes only if the best token falls out of the first pass's
top 128 (top-1 agreement is unchanged), and rescoring 128 rather than 64 more than pays for it in KL
divergence.

Activations are bfloat16. Small matmuls (decode: one row per sequence) run weight-only kernels,
which read 1/4 (int8) or 1/8 (int4) of the fp32 bytes. In every prefill pass (the model runner sets
each layer's `uses_dense_weights`) the dense bfloat16 kernel runs on the weights dequantized once, on
first use, and kept: prefill then runs at bfloat16 speed, for the memory of a bfloat16 copy of the
weights, and a prompt is computed by one kernel however the scheduler splits it into passes (a model
whose copies would pass the runner's `MAX_DENSE_PREFILL_BYTES` prefills on its kernels instead). MoE
experts are quantized like linears, one layer per expert matrix; routers and the shared-expert gate are
plain parameters and stay unquantized.

Where the compiled kernels are built (`runtime.model.kernels`, AVX-512 VNNI), `Int4Linear` runs them
in every other pass, at any row count: activations quantized to int16 per group of 32 (as exact as
bfloat16; int8 ones, llama.cpp's Q8_1, lower top-1 agreement with fp32 in any decoder layer), integer
dot products, and a row's output bitwise independent of the other rows in the call. So a decode
batch computes each sequence as a lone decode would, and a speculative k-token verify pass as k plain
decode steps would; `RescoredHead` keeps that property with the compiled kernel's approximate logits
and the compiled fixed-order rescoring. Without the compiled kernels (a logged reason), torch's int4
kernel runs up to `MAX_QUANTIZED_KERNEL_ROWS` rows and the dense weights beyond, as int8 layers do:
fast, but a row's rounding then depends on how many rows share the call. torch's int4 kernel is also
the reference the tests compare the compiled one against.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from runtime.errors import UnsupportedModelError
from runtime.model import kernels
from runtime.model.huge_pages import in_huge_pages
from runtime.model.layers.moe import SparseMoE

logger = logging.getLogger(__name__)

#: Up to this many rows torch's weight-only kernels beat the dense bfloat16 matmul (crossover measured at
#: 8-12); the compiled int4 kernel runs at any row count instead, for row invariance.
MAX_QUANTIZED_KERNEL_ROWS = 8
#: Inputs sharing one 4-bit scale and offset (GGUF Q4_0/Q4_1 blocks are 32 wide).
INT4_GROUP_SIZE = 32
#: Output columns per tile: torch's int4 kernel packs them by 16, the compiled kernel's registers hold 16.
INT4_TILE_COLUMNS = 16
#: Head logits recomputed exactly per row: far more than top-k / top-p sampling ever keeps, and enough
#: that the coarser first pass (int8 activations) leaves less KL divergence in the tail than 64 left with
#: int16 ones (SmolLM2, benchmarks/forward.py: 0.00498 then; 0.0040 with 128, 0.0031 with 256, whose
#: scattered weight rows cost 8 rows 0.7 ms more than 64's, 128's 0.17 ms: most of what int8 saves).
NUM_RESCORED_LOGITS = 128
# On a 262,144-token vocabulary (Gemma 3 270M Q4_K_M on its stored codes, benchmarks/block_codes.py's text) the
# tail outside 128 weighs more: KL from fp32 0.0033 with 128 rescored, 0.0016 with 683 (SmolLM2's share of its
# vocabulary), 0.0014 with 1,024, 0.0009 with the whole head exact; 683 cost the rescoring call 0.25 ms more a
# row at one row and 2.1 ms more at 8 (~2% and ~10% of a step), so 128 stays (top-1 agreement is the same).

ModuleT = TypeVar("ModuleT", bound=nn.Module)
#: Rows `Int4Linear.from_linear` quantizes at a time: its float32 work copies stay a few MB, where a 262k-token
#: head's whole would take GBs.
_QUANTIZED_ROWS_PER_CHUNK = 4096


class Quantization(enum.Enum):
    """How linear weights are stored (activations are then bfloat16).

    STORED keeps a GGUF file's own block codes (`runtime.model.block_codes`): it needs the checkpoint's
    codes, so `build_model` applies it, not `quantize`.
    """

    NONE = "none"
    INT8 = "int8"
    INT4 = "int4"
    STORED = "stored"


class QuantizedLinear(nn.Module):
    """A weight-only quantized linear: the kernel choice, and the dense bfloat16 weight rebuilt on first use.

    Attributes:
        uses_dense_weights: multiply by the dense weight whatever the row count. The model runner sets
            it for prefill passes, so a prompt computes alike in one pass or several; otherwise up to
            `MAX_QUANTIZED_KERNEL_ROWS` rows run the weight-only kernel (any row count for the compiled
            int4 kernel: `Int4Linear.runs_kernel`).
    """

    bias: torch.Tensor | None

    def __init__(self) -> None:
        super().__init__()
        self._dense: torch.Tensor | None = None
        self.uses_dense_weights = False

    def dequantize(self) -> torch.Tensor:
        """The [N, K] bfloat16 weight the stored codes stand for."""
        raise NotImplementedError

    @property
    def dense_bytes(self) -> int:
        """Bytes of the bfloat16 weight `dense_linear` builds and keeps."""
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

    @property
    def dense_bytes(self) -> int:
        return 2 * self.weight.numel()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.runs_kernel(x):
            out = torch._weight_int8pack_mm(x, self.weight, self.scales)
        else:
            out = self.dense_linear(x)
        return out if self.bias is None else out + self.bias


def pack_int4_tiles(codes: torch.Tensor) -> torch.Tensor:
    """[N, K] codes in [0, 15] as the compiled kernel reads them: [N / 16, K / 32, 256] uint8.

    Per tile of 16 columns and group of 32 inputs, 4 registers of 16 32-bit lanes (one per column);
    lane bits 4p..4p+3 and 16+4p..19+4p hold the codes of inputs 2i and 2i + 1, i = 4 * register + p.
    """
    num_columns, num_inputs = codes.shape
    # [tile, column, group, register, half, nibble, input of the pair], input = 8r + 4h + 2n + e
    split = codes.to(torch.uint8).view(num_columns // INT4_TILE_COLUMNS, INT4_TILE_COLUMNS, -1, 4, 2, 2, 2)
    ordered = split.permute(0, 2, 3, 1, 6, 4, 5)  # [tile, group, register, column, input of the pair, half, nibble]
    return (ordered[..., 0] | (ordered[..., 1] << 4)).reshape(num_columns // INT4_TILE_COLUMNS, -1, 256)


def unpack_int4_tiles(tiles: torch.Tensor) -> torch.Tensor:
    """The [N, K] uint8 codes that `pack_int4_tiles` packed."""
    num_tiles, num_groups, _ = tiles.shape
    split = tiles.view(num_tiles, num_groups, 4, INT4_TILE_COLUMNS, 2, 2)
    nibbles = torch.stack((split & 15, split >> 4), dim=-1)  # [tile, group, register, column, pair input, half, nibble]
    return nibbles.permute(0, 3, 1, 2, 5, 6, 4).reshape(num_tiles * INT4_TILE_COLUMNS, num_groups * INT4_GROUP_SIZE)


def pack_fifth_bits(codes: torch.Tensor) -> torch.Tensor:
    """Bit 4 of [N, K] codes in [0, 31] as the compiled kernel reads it beside `pack_int4_tiles`' nibbles:
    [N / 16, K / 32, 64] uint8, per tile and group 16 32-bit lanes (one per column) whose bit 16e + i holds
    the bit of input 2i + e."""
    num_columns, num_inputs = codes.shape
    # [tile, column, group, pair, input of the pair]
    bits = (codes.to(torch.int64) >> 4).view(num_columns // INT4_TILE_COLUMNS, INT4_TILE_COLUMNS, -1, 16, 2)
    positions = 16 * torch.arange(2)[None, :] + torch.arange(16)[:, None]  # [pair, input of the pair]
    lanes = (bits << positions).sum(dim=(-2, -1)).to(torch.int32)  # [tile, column, group]
    return lanes.transpose(1, 2).contiguous().view(torch.uint8).view(num_columns // INT4_TILE_COLUMNS, -1, 64)


def unpack_fifth_bits(fifth_bits: torch.Tensor) -> torch.Tensor:
    """The [N, K] bits 4 (0 or 16) of the codes `pack_fifth_bits` packed."""
    num_tiles, num_groups, _ = fifth_bits.shape
    lanes = fifth_bits.view(torch.int32).view(num_tiles, num_groups, INT4_TILE_COLUMNS).transpose(1, 2)
    positions = 16 * torch.arange(2)[None, :] + torch.arange(16)[:, None]  # [pair, input of the pair]
    bits = (lanes[..., None, None].to(torch.int64) >> positions) & 1  # [tile, column, group, pair, input]
    return (bits << 4).to(torch.uint8).reshape(num_tiles * INT4_TILE_COLUMNS, num_groups * INT4_GROUP_SIZE)


def tile_parameters(parameters: torch.Tensor) -> torch.Tensor:
    """[N, B] per-group (or per-block) parameters as [N / 16, B, 16]: one load gives a tile's 16 columns."""
    return parameters.view(-1, INT4_TILE_COLUMNS, parameters.shape[1]).transpose(1, 2).contiguous()


def untile_parameters(parameters: torch.Tensor) -> torch.Tensor:
    """The [N, B] parameters `tile_parameters` tiled."""
    return parameters.transpose(1, 2).reshape(-1, parameters.shape[1])


class Int4Linear(QuantizedLinear):
    """A linear layer with 4-bit weights, a bfloat16 scale and offset per group of `INT4_GROUP_SIZE` inputs.

    The codes are stored once, tiled for the compiled kernel (`pack_int4_tiles`), with per-group
    `scales` and `bases` (a weight is `q * scale + base`): 0.625 bytes per weight, which `dequantize`
    also reads. A GGUF file's 4-bit blocks (`runtime.model.block_codes`) keep float32 scales and bases,
    exact where bfloat16 would round them (0.75 bytes per weight; compiled kernel only), and their 5-bit
    blocks a plane of each code's bit 4 beside the nibbles (`fifth_bits`: 0.875 bytes per weight). Only
    without the compiled kernels does the layer also hold torch's int4 packing (`packed`, opaque, and
    `scales_and_offsets`, for `(q - 8) * scale + offset`): 0.625 bytes more.

    Args:
        tiles: [N / 16, K / 32, 256] uint8 codes (`pack_int4_tiles`).
        scales: [N / 16, K / 32, 16] bfloat16, or float32 (with the compiled kernel).
        bases: [N / 16, K / 32, 16], the dtype of `scales`.
        bias: [N] bfloat16 or None.
        torch_kernel_weights: torch's int4 packing of the codes and its [K / g, N, 2] bfloat16 scales and
            offsets, to run torch's kernel; None runs the compiled one.
        activation_bits: how the compiled kernel quantizes activations per group of 32: 16 (as exact as
            bfloat16) or 8 (twice the products per instruction; for a head whose top logits are rescored).
        fifth_bits: [N / 16, K / 32, 64] uint8, bit 4 of codes in [0, 31] (`pack_fifth_bits`), or None for
            codes in [0, 15]; compiled kernel and 16-bit activations only.
    """

    tiles: torch.Tensor
    fifth_bits: torch.Tensor | None
    scales: torch.Tensor
    bases: torch.Tensor
    packed: torch.Tensor | None
    scales_and_offsets: torch.Tensor | None

    def __init__(
        self,
        tiles: torch.Tensor,
        scales: torch.Tensor,
        bases: torch.Tensor,
        bias: torch.Tensor | None,
        *,
        torch_kernel_weights: tuple[torch.Tensor, torch.Tensor] | None = None,
        activation_bits: int = 16,
        fifth_bits: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.register_buffer("tiles", tiles)
        self.register_buffer("fifth_bits", fifth_bits)
        self.register_buffer("scales", scales)
        self.register_buffer("bases", bases)
        self.register_buffer("bias", bias)
        packed, scales_and_offsets = torch_kernel_weights if torch_kernel_weights is not None else (None, None)
        self.register_buffer("packed", packed)
        self.register_buffer("scales_and_offsets", scales_and_offsets)
        #: Run the compiled kernel (row invariant, any row count) rather than torch's: a plain attribute,
        #: read every call (a buffer lookup through `nn.Module.__getattr__` costs more).
        self.uses_compiled_kernel = torch_kernel_weights is None
        self.activation_bits = activation_bits

    @staticmethod
    def fits(linear: nn.Linear) -> bool:
        """Whether the int4 kernels take this shape (outputs in tiles of 16, inputs in whole groups)."""
        num_rows, num_inputs = linear.weight.shape
        return num_rows % INT4_TILE_COLUMNS == 0 and num_inputs % INT4_GROUP_SIZE == 0

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, *, uses_compiled_kernel: bool | None = None, activation_bits: int = 16
    ) -> Int4Linear:
        """Quantize `linear`'s weight per group: 15 even steps from the group's minimum to its maximum.

        Args:
            linear: a bfloat16 linear that `fits`.
            uses_compiled_kernel: run the compiled kernel rather than torch's; defaults to whether it is built.
            activation_bits: the compiled kernel's activation codes, 16 or 8 (see the class).
        """
        if uses_compiled_kernel is None:
            uses_compiled_kernel = kernels.has_compiled_kernels()
        num_rows, num_inputs = linear.weight.shape
        parts: list[tuple[torch.Tensor, ...]] = []
        for start in range(0, num_rows, _QUANTIZED_ROWS_PER_CHUNK):  # float32 copies of a chunk, not of a head
            rows = linear.weight.detach()[start : start + _QUANTIZED_ROWS_PER_CHUNK].float()
            groups = rows.view(rows.shape[0], num_inputs // INT4_GROUP_SIZE, INT4_GROUP_SIZE)  # [n, K / g, g]
            minimum, maximum = groups.amin(dim=-1), groups.amax(dim=-1)  # [n, K / g]
            scales = ((maximum - minimum) / 15).clamp(min=1e-12)
            codes = ((groups - minimum[..., None]) / scales[..., None]).round().clamp(0, 15).to(torch.uint8)
            offsets = minimum + 8 * scales  # torch's kernel computes (q - 8) * scale + offset
            parts.append(
                (codes.view(rows.shape[0], num_inputs), torch.stack((scales, offsets), dim=-1).to(torch.bfloat16))
            )
        codes = torch.cat([part[0] for part in parts])  # [N, K]
        scales_and_offsets = torch.cat([part[1] for part in parts]).transpose(0, 1)  # [K / g, N, 2] bfloat16
        group_scales, group_offsets = scales_and_offsets.transpose(0, 1).float().unbind(-1)  # [N, K / g] each
        bases = (group_offsets - 8 * group_scales).to(torch.bfloat16)
        torch_kernel_weights = (
            None
            if uses_compiled_kernel
            else (
                torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.int(), 1),
                scales_and_offsets.contiguous(),
            )
        )
        return cls(
            pack_int4_tiles(codes),
            tile_parameters(group_scales.to(torch.bfloat16)),
            tile_parameters(bases),
            None if linear.bias is None else linear.bias.detach().to(torch.bfloat16),
            torch_kernel_weights=torch_kernel_weights,
            activation_bits=activation_bits,
        )

    @property
    def dense_bytes(self) -> int:
        return 2 * self.tiles.shape[0] * INT4_TILE_COLUMNS * self.tiles.shape[1] * INT4_GROUP_SIZE

    def codes(self) -> torch.Tensor:
        """The [N, K] uint8 codes in [0, 15], or [0, 31] with `fifth_bits`."""
        codes = unpack_int4_tiles(self.tiles)
        return codes if self.fifth_bits is None else codes | unpack_fifth_bits(self.fifth_bits)

    def dequantize(self) -> torch.Tensor:
        codes = self.codes()
        num_rows = codes.shape[0]
        scales, bases = (
            untile_parameters(self.scales)[..., None],
            untile_parameters(self.bases)[..., None],
        )  # [N, K / g, 1]
        weight = torch.addcmul(bases, codes.view(num_rows, -1, INT4_GROUP_SIZE).to(scales.dtype), scales)
        return weight.view(num_rows, -1).to(torch.bfloat16)  # [N, K]

    def runs_kernel(self, x: torch.Tensor) -> bool:
        """Outside prefill the compiled kernel takes every row count, so a row rounds alike in any batch."""
        if self.uses_compiled_kernel:
            return not self.uses_dense_weights
        return super().runs_kernel(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.uses_compiled_kernel and not self.uses_dense_weights:  # `runs_kernel`, inlined: every step
            out = kernels.int4_linear(
                x.contiguous(), self.tiles, self.scales, self.bases, self.activation_bits, self.fifth_bits
            )
        elif not self.runs_kernel(x):
            out = self.dense_linear(x)
        else:
            out = torch.ops.aten._weight_int4pack_mm_for_cpu(x, self.packed, INT4_GROUP_SIZE, self.scales_and_offsets)
        return out if self.bias is None else out + self.bias


class RescoredHead(nn.Module):
    """An output head: approximate logits for every token, exact float32 logits for each row's top candidates.

    The quantized matmul reads a fraction of the bfloat16 weight (an int4 head costs ~1/5 of the
    bfloat16 one at one row on this CPU; with the compiled kernels its activations are int8, which
    halves its products' instructions at any row count); its error matters only for tokens that can be
    chosen, so
    the `NUM_RESCORED_LOGITS` largest logits of each row (with the compiled kernels, also any tied with
    the last; torch's `topk` breaks such ties) are recomputed from the bfloat16 weight
    (which tied models share with the embeddings), summed in float32: bfloat16 logits (steps of 0.125
    near 25) tie the top candidates often enough to flip greedy choices. Prefill passes
    (`approximate.uses_dense_weights`), and wide inputs when the approximation runs torch's kernels,
    take the dense bfloat16 head as the first pass, then the same rescoring.
    With the compiled kernels both steps are row invariant: the compiled int4 kernel, then
    `kernels.rescored_logits` (each row's choice and fixed-order float32 sums, where a batched matmul's order
    may follow the shapes).

    Args:
        linear: the bfloat16 head ([V, H] weight, no bias), kept by reference.
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.approximate = (
            Int4Linear.from_linear(linear, activation_bits=8)
            if Int4Linear.fits(linear)
            else Int8Linear.from_linear(linear)
        )
        self.weight = linear.weight
        self.num_rescored = min(NUM_RESCORED_LOGITS, linear.weight.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """float32 logits [N, V]: the candidates exact in float32, the rest as the first pass gave them."""
        # bfloat16 first pass: near-ties round to equal logits
        first_pass = self.approximate(x) if self.approximate.runs_kernel(x) else F.linear(x, self.weight)  # [N, V]
        if kernels.has_compiled_kernels():  # one call for widening, choice, exact sums and scatter
            return kernels.rescored_logits(first_pass, x.contiguous(), self.weight, self.num_rescored)
        logits = first_pass.float()
        top_ids = logits.topk(self.num_rescored, dim=-1).indices  # [N, k]
        exact = torch.bmm(self.weight[top_ids].float(), x.float()[:, :, None])[..., 0]  # [N, k]
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
    swap_linears(model, head_names, linear_quantizer(quantization))
    place_in_huge_pages(model)
    return model


#: What becomes of a linear layer, by its fully qualified name: its quantized replacement, or None to keep it.
LayerQuantizer = Callable[[str, nn.Linear], nn.Module | None]


def linear_quantizer(quantization: Quantization) -> LayerQuantizer:
    """`INT8`: every linear an `Int8Linear`; `INT4`: an `Int4Linear`, or `Int8Linear` where its shape does not
    fit the int4 kernel (rows not a multiple of 16, inputs not of 32)."""
    if quantization is Quantization.STORED:
        raise UnsupportedModelError("stored block codes come with a checkpoint: build_model(..., block_codes=...)")
    if quantization is Quantization.INT4 and not kernels.has_compiled_kernels():
        logger.warning("int4 layers run torch's kernel: %s", kernels.KERNELS_UNAVAILABLE_REASON)

    def layer_of(name: str, linear: nn.Linear) -> QuantizedLinear:
        if quantization is Quantization.INT4 and Int4Linear.fits(linear):
            return Int4Linear.from_linear(linear)
        return Int8Linear.from_linear(linear)

    return layer_of


def swap_linears(module: nn.Module, head_names: tuple[str, ...], layer_of: LayerQuantizer, *, prefix: str = "") -> None:
    """Replace `module`'s `nn.Linear`s in place: output heads (`head_names`) by `RescoredHead`s, the others by
    `layer_of(prefix + name within module, linear)` where it gives a layer; and the stacked matrices of
    mixture-of-experts layers by one such layer per expert (`SparseMoE.quantize_experts`)."""
    for parent_name, parent in list(module.named_modules()):
        if isinstance(parent, SparseMoE):
            parent.quantize_experts(layer_of, prefix + (f"{parent_name}." if parent_name else ""))
        for name, child in list(parent.named_children()):
            if not isinstance(child, nn.Linear):
                continue
            full_name = prefix + (f"{parent_name}.{name}" if parent_name else name)
            replacement = RescoredHead(child) if full_name in head_names else layer_of(full_name, child)
            if replacement is not None:
                setattr(parent, name, replacement)


def place_in_huge_pages(model: nn.Module) -> None:
    """Put the tiled layers' buffers in one mapping of 2 MiB pages: decode streams every weight once per step,
    faster from them (runtime.model.huge_pages)."""
    buffers = [
        (layer, name)
        for layer in quantized_layers(model)
        if getattr(layer, "tiles", None) is not None
        for name in ("tiles", "fifth_bits", "scales", "bases")
        if getattr(layer, name, None) is not None
    ]
    for (layer, name), placed in zip(
        buffers, in_huge_pages([getattr(layer, name) for layer, name in buffers]), strict=True
    ):
        setattr(layer, name, placed)


def quantized_layers(model: nn.Module) -> list[QuantizedLinear]:
    """`model`'s weight-only linears, head approximations included: those whose kernel choice a pass sets."""
    return [module for module in model.modules() if isinstance(module, QuantizedLinear)]
