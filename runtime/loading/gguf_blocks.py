"""GGUF block formats as integer codes with block scales and bases: what a block-code layer keeps exactly.

Every supported block format stores a weight as `code * scale + base` with an integer code and, per block
of 16 or 32 inputs, a scale and a base (zero for the symmetric formats):

| format | codes | scale | base | block |
|---|---|---|---|---|
| Q4_0, Q5_0 | q - 8, q - 16 | d | 0 | 32 |
| Q4_1, Q5_1 | q | d | m | 32 |
| Q8_0 | q (int8) | d | 0 | 32 |
| Q4_K, Q5_K | q | d * sc (6-bit sc) | -(dmin * m) | 32 |
| Q6_K | q - 32 | d * sc (int8 sc) | 0 | 16 |

d, m and dmin are float16; the products are exact in float32 and computed as `gguf.quants` computes
them, so `codes * scales + bases` is the file's dequantized tensor (tested against `gguf`). Scales and
bases come per block of 16 inputs whatever the format (a block of 32 repeats them), so tensors of
different formats can be fused along their rows; `runtime.model.block_codes` stores them per 32 again
where the pairs agree.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from runtime.errors import CorruptModelError

_T = GGMLQuantizationType
#: Inputs per block of the K-quants.
_SUPER_BLOCK = 256
#: Inputs per scale and base in `BlockCodes`.
CODE_BLOCK_SIZE = 16
#: The formats `block_codes` reads.
BLOCK_FORMATS = frozenset({_T.Q4_0, _T.Q4_1, _T.Q5_0, _T.Q5_1, _T.Q8_0, _T.Q4_K, _T.Q5_K, _T.Q6_K})


class BlockCodes(NamedTuple):
    """A matrix as integer codes with a scale and a base per `CODE_BLOCK_SIZE` inputs of a row.

    Attributes:
        codes: [..., N, K] int8.
        scales: [..., N, K / 16] float32.
        bases: [..., N, K / 16] float32: a weight is `codes * scales + bases` (block-wise).
    """

    codes: np.ndarray
    scales: np.ndarray
    bases: np.ndarray


def _halves(values: np.ndarray, nibble_rows: int) -> np.ndarray:
    """[blocks, inputs] uint8 codes of 4-bit fields: each run of `nibble_rows` bytes gives its low nibbles, then
    its high ones."""
    runs = values.reshape(values.shape[0], -1, 1, nibble_rows) >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 2, 1)
    return (runs & np.uint8(0x0F)).reshape(values.shape[0], -1)


def _f16(values: np.ndarray) -> np.ndarray:
    return values.view(np.float16).astype(np.float32)


def _k_scales_and_mins(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K/Q5_K's eight 6-bit scales and mins from their 12 bytes: [blocks, 8] each."""
    low, high, mixed = np.split(packed.reshape(-1, 3, 4), 3, axis=1)
    scales = np.concatenate([low & 0x3F, (mixed & 0x0F) | ((low >> 2) & 0x30)], axis=-1)
    mins = np.concatenate([high & 0x3F, (mixed >> 4) | ((high >> 2) & 0x30)], axis=-1)
    return scales.reshape(-1, 8), mins.reshape(-1, 8)


def _five_bit_high(packed: np.ndarray) -> np.ndarray:
    """Q5_0/Q5_1's fifth bits, one per input of the 32: [blocks, 32] uint8."""
    bits = packed.copy().view(np.uint32).reshape(-1, 1) >> np.arange(32, dtype=np.uint32).reshape(1, 32)
    return (bits & np.uint32(1)).astype(np.uint8)


def _parse(blocks: np.ndarray, tensor_type: GGMLQuantizationType) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One format's blocks ([blocks, bytes] uint8): codes [blocks, inputs] int8, per-block scales and bases."""
    if tensor_type in (_T.Q4_0, _T.Q4_1, _T.Q5_0, _T.Q5_1, _T.Q8_0):
        offset = {_T.Q4_1: 4, _T.Q5_1: 4}.get(tensor_type, 2)
        scales = _f16(blocks[:, :2])
        bases = _f16(blocks[:, 2:4]) if offset == 4 else np.zeros_like(scales)
        if tensor_type is _T.Q8_0:
            return blocks[:, 2:].view(np.int8), scales, bases
        if tensor_type in (_T.Q4_0, _T.Q4_1):
            codes = _halves(blocks[:, offset:], 16)
        else:
            codes = _halves(blocks[:, offset + 4 :], 16) | (_five_bit_high(blocks[:, offset : offset + 4]) << 4)
        centre = {_T.Q4_0: 8, _T.Q5_0: 16}.get(tensor_type, 0)
        return codes.astype(np.int8) - np.int8(centre), scales, bases
    if tensor_type in (_T.Q4_K, _T.Q5_K):
        d, dmin = _f16(blocks[:, :2]), _f16(blocks[:, 2:4])
        sub_scales, mins = _k_scales_and_mins(blocks[:, 4:16])
        codes = _halves(blocks[:, 16:] if tensor_type is _T.Q4_K else blocks[:, 48:], 32)
        if tensor_type is _T.Q5_K:
            high = blocks[:, 16:48].reshape(-1, 1, 32) >> np.arange(8, dtype=np.uint8).reshape(1, 8, 1)
            codes = codes | ((high & np.uint8(1)).reshape(-1, _SUPER_BLOCK) << 4)
        return codes.astype(np.int8), d * sub_scales.astype(np.float32), -(dmin * mins.astype(np.float32))
    assert tensor_type is _T.Q6_K, tensor_type
    low = _halves(blocks[:, :128], 64)
    high = blocks[:, 128:192].reshape(-1, 2, 1, 32) >> np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)
    codes = low | ((high & np.uint8(3)).reshape(-1, _SUPER_BLOCK) << 4)
    scales = _f16(blocks[:, 208:210]) * blocks[:, 192:208].view(np.int8).astype(np.float32)
    return codes.astype(np.int8) - np.int8(32), scales, np.zeros_like(scales)


def block_codes(data: np.ndarray, tensor_type: GGMLQuantizationType, shape: tuple[int, ...], name: str) -> BlockCodes:
    """A block-format tensor's codes, scales and bases in its row-major `shape` (`[..., N, K]`).

    Raises:
        CorruptModelError: data that does not hold `shape`'s blocks.
        ValueError: `tensor_type` outside `BLOCK_FORMATS`.
    """
    if tensor_type not in BLOCK_FORMATS:
        raise ValueError(f"{tensor_type.name} is not a block format")
    inputs_per_block, bytes_per_block = GGML_QUANT_SIZES[tensor_type]
    num_values = int(np.prod(shape))
    raw = np.asarray(data).reshape(-1)
    if shape[-1] % inputs_per_block or raw.size != num_values // inputs_per_block * bytes_per_block:
        raise CorruptModelError(f"tensor {name!r} does not hold {shape} in {tensor_type.name} blocks")
    codes, scales, bases = _parse(raw.reshape(-1, bytes_per_block), tensor_type)
    repeat = inputs_per_block // scales.shape[1] // CODE_BLOCK_SIZE  # 2 for blocks of 32, 1 for Q6_K's 16
    per_block = (*shape[:-1], shape[-1] // CODE_BLOCK_SIZE)
    return BlockCodes(
        np.ascontiguousarray(codes).reshape(shape),
        np.repeat(scales, repeat, axis=1).reshape(per_block),
        np.repeat(bases, repeat, axis=1).reshape(per_block),
    )
