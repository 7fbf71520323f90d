"""Block-code layers: the decoder's matrices as the integer codes a GGUF file stores, multiplied as they are.

A GGUF file quantized with a mix of block formats (a Q4_K_M file holds Q4_K, Q5_0, Q6_K and Q8_0 matrices)
stores each weight as `code * scale + base` per block of 16 or 32 inputs (`runtime.loading.gguf_blocks`).
`BlockCodeLinear` keeps those codes in int8 and the block scales and bases in float32: the weights it
multiplies are the file's, bit for bit, where a bfloat16 copy rounds each weight to 8 significant bits and
`Int4Linear` re-quantizes it to 4 (on Gemma 3 270M Q4_K_M: KL 0.215 from the file's float32 model, against
0.0033 here). The compiled kernel (`kernels.block_linear`: int16 activations per group of 32, as in the
4-bit layers; row invariant) reads one byte a weight, plus its block parameters, against bfloat16's two,
and the output head keeps its 4-bit first pass: that file decodes 6-7.5x faster than on bfloat16 weights
(benchmarks/block_codes.py). Prefill passes multiply the dense bfloat16 weights (`QuantizedLinear`), as
every quantized layer does while the model's dense copies fit the runner's budget.

`build_model` builds them from a checkpoint's codes (`Quantization.STORED`, through `stored_quantizer`), one
decoder layer at a time. Matrices whose codes take 16 levels a block of 32 (Q4_0, Q4_1, Q4_K) go to the 4-bit
layer instead, and those with 32 levels (Q5_0, Q5_1, Q5_K) to the same layer with their codes' fifth bits
(`narrow_code_layer`: `Int4Linear` with float32 block parameters, 0.75 and 0.875 bytes a weight against 1.125
to 1.25); linears without codes (a matrix the file keeps in float) stay as they are, and the output head becomes
a `RescoredHead`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn

from runtime.model import kernels
from runtime.model.quantization import (
    INT4_GROUP_SIZE,
    INT4_TILE_COLUMNS,
    Int4Linear,
    LayerQuantizer,
    QuantizedLinear,
    pack_fifth_bits,
    pack_int4_tiles,
    tile_parameters,
    untile_parameters,
)

logger = logging.getLogger(__name__)

#: A matrix's [N, K] int8 codes and [N, K / 16] float32 scales and bases (`gguf_blocks.BlockCodes` as tensors).
StoredCodes = tuple[torch.Tensor, torch.Tensor, torch.Tensor]

#: Inputs per scale and base as checkpoints give them (`gguf_blocks.CODE_BLOCK_SIZE`).
_CHECKPOINT_BLOCK = 16


def pack_code_tiles(codes: torch.Tensor) -> torch.Tensor:
    """[N, K] int8 codes as the compiled kernel reads them: [N / 16, K / 32, 512] int8.

    Per tile of 16 columns and group of 32 inputs, 16 runs of 32 bytes; run i holds column c's codes of
    inputs 2i and 2i + 1 at bytes 2c and 2c + 1.
    """
    num_columns, num_inputs = codes.shape
    split = codes.view(num_columns // INT4_TILE_COLUMNS, INT4_TILE_COLUMNS, num_inputs // INT4_GROUP_SIZE, 16, 2)
    return split.permute(0, 2, 3, 1, 4).reshape(num_columns // INT4_TILE_COLUMNS, -1, INT4_GROUP_SIZE * 16)


def unpack_code_tiles(tiles: torch.Tensor) -> torch.Tensor:
    """The [N, K] int8 codes that `pack_code_tiles` packed."""
    num_tiles, num_groups, _ = tiles.shape
    split = tiles.view(num_tiles, num_groups, 16, INT4_TILE_COLUMNS, 2)
    return split.permute(0, 3, 1, 2, 4).reshape(num_tiles * INT4_TILE_COLUMNS, num_groups * INT4_GROUP_SIZE)


class BlockCodeLinear(QuantizedLinear):
    """A linear layer with int8 codes and a float32 scale and base per block of 16 or 32 inputs.

    Args:
        tiles: [N / 16, K / 32, 512] int8 codes (`pack_code_tiles`).
        scales: [N / 16, K / block_size, 16] float32.
        bases: the same shape, or None for formats without a base: a weight is `code * scale + base`.
        block_size: inputs per scale and base, 16 or 32.
        bias: [N] bfloat16 or None.
    """

    tiles: torch.Tensor
    scales: torch.Tensor
    bases: torch.Tensor | None

    def __init__(
        self,
        tiles: torch.Tensor,
        scales: torch.Tensor,
        bases: torch.Tensor | None,
        block_size: int,
        bias: torch.Tensor | None,
    ) -> None:
        super().__init__()
        for name, buffer in (("tiles", tiles), ("scales", scales), ("bases", bases), ("bias", bias)):
            self.register_buffer(name, buffer)
        self.block_size = block_size
        #: A plain attribute, read every call (a buffer lookup costs more).
        self.uses_compiled_kernel = kernels.has_compiled_kernels()

    @staticmethod
    def fits(weight_shape: torch.Size | tuple[int, ...]) -> bool:
        """Whether the kernel takes this [N, K] shape (outputs in tiles of 16, inputs in groups of 32)."""
        num_rows, num_inputs = weight_shape
        return num_rows % INT4_TILE_COLUMNS == 0 and num_inputs % INT4_GROUP_SIZE == 0

    @classmethod
    def from_codes(
        cls, codes: torch.Tensor, scales: torch.Tensor, bases: torch.Tensor, bias: torch.Tensor | None
    ) -> BlockCodeLinear:
        """The layer of [N, K] int8 `codes` with [N, K / 16] float32 `scales` and `bases`: blocks of 32 where
        every pair of blocks agrees (the formats of 32-input blocks), no bases where all are zero."""
        block_size = _CHECKPOINT_BLOCK
        if _pairs_agree(scales, bases):
            scales, bases, block_size = scales[:, 0::2], bases[:, 0::2], 2 * _CHECKPOINT_BLOCK
        return cls(
            pack_code_tiles(codes.contiguous()),
            tile_parameters(scales.float()),
            None if not bases.any() else tile_parameters(bases.float()),
            block_size,
            bias,
        )

    @property
    def dense_bytes(self) -> int:
        return 2 * self.tiles.shape[0] * INT4_TILE_COLUMNS * self.tiles.shape[1] * INT4_GROUP_SIZE

    def codes(self) -> torch.Tensor:
        """The [N, K] int8 codes."""
        return unpack_code_tiles(self.tiles)

    def dequantize(self) -> torch.Tensor:
        codes = self.codes()
        num_rows = codes.shape[0]
        weight = codes.view(num_rows, -1, self.block_size).float() * untile_parameters(self.scales)[..., None]
        if self.bases is not None:
            weight = weight + untile_parameters(self.bases)[..., None]
        return weight.view(num_rows, -1).to(torch.bfloat16)  # [N, K]

    def runs_kernel(self, x: torch.Tensor) -> bool:
        """Outside prefill the compiled kernel takes every row count; without it the dense weights run."""
        return self.uses_compiled_kernel and not self.uses_dense_weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.uses_compiled_kernel and not self.uses_dense_weights:  # `runs_kernel`, inlined: every step
            out = kernels.block_linear(x.contiguous(), self.tiles, self.scales, self.bases, self.block_size)
        else:
            out = self.dense_linear(x)
        return out if self.bias is None else out + self.bias


def _pairs_agree(scales: torch.Tensor, bases: torch.Tensor) -> bool:
    """Whether every pair of blocks of 16 shares its scale and base: blocks of 32 (every format but Q6_K)."""
    return torch.equal(scales[:, 0::2], scales[:, 1::2]) and torch.equal(bases[:, 0::2], bases[:, 1::2])


def narrow_code_layer(
    codes: torch.Tensor, scales: torch.Tensor, bases: torch.Tensor, bias: torch.Tensor | None
) -> Int4Linear | None:
    """The stored codes as an `Int4Linear` with float32 scales and bases where every block of 32 holds at most 32
    levels: 16 (Q4_0, Q4_1, Q4_K) in nibbles, 0.75 bytes a weight; 32 (Q5_0, Q5_1, Q5_K) with a plane of their
    fifth bits, 0.875 (the int8-code layer reads 1.125 to 1.25). Codes in [0, 31], or signed ones without a base
    (Q4_0's [-8, 7], Q5_0's [-16, 15]) moved up by 8 or 16 with the base lowered by as many scales (checked to give
    the same float32 weights, as it does for a file's float16 scales). None for other codes, or without the
    compiled kernels."""
    if not kernels.has_compiled_kernels() or not _pairs_agree(scales, bases):
        return None
    scales, bases = scales[:, 0::2].float(), bases[:, 0::2].float()  # [N, K / 32]
    blocks = codes.view(codes.shape[0], -1, INT4_GROUP_SIZE).short()
    low, high = blocks.amin(-1), blocks.amax(-1)  # [N, K / 32]
    nibble_range = (low >= -8) & (high <= 7)
    shift = torch.where(low < 0, torch.where(nibble_range, 8, 16), 0).short()
    if not bool(((low + shift >= 0) & (high + shift <= 31) & ((shift == 0) | (bases == 0))).all()):
        return None
    shifted, shifted_bases = blocks + shift[..., None], bases - scales * shift
    if bool(shift.any()) and not torch.equal(
        shifted * scales[..., None] + shifted_bases[..., None], blocks * scales[..., None] + bases[..., None]
    ):
        return None  # scales wider than a float16's (not a file's): the moved codes would not give the same weights
    shifted = shifted.view(codes.shape)
    return Int4Linear(
        pack_int4_tiles(shifted & 15),
        tile_parameters(scales),
        tile_parameters(shifted_bases),
        bias,
        fifth_bits=pack_fifth_bits(shifted) if bool((shifted > 15).any()) else None,
    )


def stored_quantizer(codes_of: Callable[[str], StoredCodes | None]) -> LayerQuantizer:
    """The layer of each linear whose weight has stored codes (`codes_of(parameter name)`): a `BlockCodeLinear`,
    or an `Int4Linear` where the codes are 4- or 5-bit (`narrow_code_layer`); None (kept) for the others: a
    matrix the file keeps in float, or a shape the kernels do not take."""
    if not kernels.has_compiled_kernels():
        logger.warning("block-code layers run their dense weights: %s", kernels.KERNELS_UNAVAILABLE_REASON)

    def layer_of(name: str, linear: nn.Linear) -> QuantizedLinear | None:
        stored = codes_of(name + ".weight")
        if stored is None or not BlockCodeLinear.fits(linear.weight.shape):
            return None
        bias = None if linear.bias is None else linear.bias.detach().to(torch.bfloat16)
        return narrow_code_layer(*stored, bias) or BlockCodeLinear.from_codes(*stored, bias)

    return layer_of
