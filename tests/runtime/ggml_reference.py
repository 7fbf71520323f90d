"""Reference decoders for GGML block formats, transcribed loop for loop from ggml's C code
(`dequantize_row_*` in ggml-quants.c, block layouts from ggml-common.h).

Slow and plain on purpose: an independent oracle for the `gguf` package's vectorized dequantizers.
"""

from __future__ import annotations

import numpy as np


def _f16(raw: np.ndarray) -> float:
    return float(np.frombuffer(raw.tobytes(), dtype=np.float16)[0])


def _q8_0(block: np.ndarray) -> list[float]:
    d = _f16(block[0:2])
    return [d * int(q) for q in block[2:34].view(np.int8)]


def _q4_0(block: np.ndarray) -> list[float]:
    d, qs = _f16(block[0:2]), block[2:18]
    return [((int(q) & 0xF) - 8) * d for q in qs] + [((int(q) >> 4) - 8) * d for q in qs]


def _q4_1(block: np.ndarray) -> list[float]:
    d, m, qs = _f16(block[0:2]), _f16(block[2:4]), block[4:20]
    return [(int(q) & 0xF) * d + m for q in qs] + [(int(q) >> 4) * d + m for q in qs]


def _q5(block: np.ndarray, has_min: bool) -> list[float]:
    d = _f16(block[0:2])
    m = _f16(block[2:4]) if has_min else 0.0
    start = 4 if has_min else 2
    qh = int.from_bytes(block[start : start + 4].tobytes(), "little")
    qs = block[start + 4 : start + 20]
    offset = 0 if has_min else 16
    low, high = [], []
    for j in range(16):
        xh_0 = ((qh >> j) << 4) & 0x10
        xh_1 = (qh >> (j + 12)) & 0x10
        low.append((((int(qs[j]) & 0x0F) | xh_0) - offset) * d + m)
        high.append((((int(qs[j]) >> 4) | xh_1) - offset) * d + m)
    return low + high


def _scale_min_k4(j: int, q: np.ndarray) -> tuple[int, int]:
    if j < 4:
        return int(q[j]) & 63, int(q[j + 4]) & 63
    return (int(q[j + 4]) & 0xF) | ((int(q[j - 4]) >> 6) << 4), (int(q[j + 4]) >> 4) | ((int(q[j]) >> 6) << 4)


def _q4_k(block: np.ndarray) -> list[float]:
    d, dmin, scales, qs = _f16(block[0:2]), _f16(block[2:4]), block[4:16], block[16:144]
    out = []
    for group in range(4):
        q = qs[32 * group : 32 * group + 32]
        sc1, m1 = _scale_min_k4(2 * group, scales)
        sc2, m2 = _scale_min_k4(2 * group + 1, scales)
        out += [d * sc1 * (int(v) & 0xF) - dmin * m1 for v in q]
        out += [d * sc2 * (int(v) >> 4) - dmin * m2 for v in q]
    return out


def _q5_k(block: np.ndarray) -> list[float]:
    d, dmin, scales = _f16(block[0:2]), _f16(block[2:4]), block[4:16]
    qh, qs = block[16:48], block[48:176]
    out = []
    u1, u2 = 1, 2
    for group in range(4):
        ql = qs[32 * group : 32 * group + 32]
        sc1, m1 = _scale_min_k4(2 * group, scales)
        sc2, m2 = _scale_min_k4(2 * group + 1, scales)
        out += [d * sc1 * ((int(ql[k]) & 0xF) + (16 if int(qh[k]) & u1 else 0)) - dmin * m1 for k in range(32)]
        out += [d * sc2 * ((int(ql[k]) >> 4) + (16 if int(qh[k]) & u2 else 0)) - dmin * m2 for k in range(32)]
        u1 <<= 2
        u2 <<= 2
    return out


def _q6_k(block: np.ndarray) -> list[float]:
    ql_all, qh_all, scales_all = block[0:128], block[128:192], block[192:208].view(np.int8)
    d = _f16(block[208:210])
    out = [0.0] * 256
    for half in range(2):
        ql, qh, sc = ql_all[64 * half :], qh_all[32 * half :], scales_all[8 * half :]
        base = 128 * half
        for k in range(32):
            group = k // 16
            q1 = ((int(ql[k]) & 0xF) | (((int(qh[k]) >> 0) & 3) << 4)) - 32
            q2 = ((int(ql[k + 32]) & 0xF) | (((int(qh[k]) >> 2) & 3) << 4)) - 32
            q3 = ((int(ql[k]) >> 4) | (((int(qh[k]) >> 4) & 3) << 4)) - 32
            q4 = ((int(ql[k + 32]) >> 4) | (((int(qh[k]) >> 6) & 3) << 4)) - 32
            out[base + k] = d * int(sc[group]) * q1
            out[base + k + 32] = d * int(sc[group + 2]) * q2
            out[base + k + 64] = d * int(sc[group + 4]) * q3
            out[base + k + 96] = d * int(sc[group + 6]) * q4
    return out


#: type name -> (elements per block, bytes per block, block decoder)
BLOCK_DECODERS = {
    "Q8_0": (32, 34, _q8_0),
    "Q4_0": (32, 18, _q4_0),
    "Q4_1": (32, 20, _q4_1),
    "Q5_0": (32, 22, lambda block: _q5(block, has_min=False)),
    "Q5_1": (32, 24, lambda block: _q5(block, has_min=True)),
    "Q4_K": (256, 144, _q4_k),
    "Q5_K": (256, 176, _q5_k),
    "Q6_K": (256, 210, _q6_k),
}


def reference_dequantize(raw: np.ndarray, type_name: str) -> np.ndarray:
    """Decode `raw` (uint8 [rows, bytes per row]) of a block format to float64 [rows, elements per row]."""
    block_size, type_size, decode = BLOCK_DECODERS[type_name]
    rows = [
        [value for start in range(0, row.size, type_size) for value in decode(row[start : start + type_size])]
        for row in raw.reshape(raw.shape[0], -1)
    ]
    return np.asarray(rows, dtype=np.float64).reshape(raw.shape[0], raw.shape[1] // type_size * block_size)


def random_k_blocks(type_name: str, num_rows: int, num_blocks: int, rng: np.random.Generator) -> np.ndarray:
    """Random bytes for a K-quant tensor with finite, moderate f16 scales (random bytes could be NaN)."""
    _, type_size, _ = BLOCK_DECODERS[type_name]
    raw = rng.integers(0, 256, size=(num_rows, num_blocks, type_size), dtype=np.uint8)
    scales = rng.uniform(0.001, 0.1, size=(num_rows, num_blocks, 2)).astype(np.float16).view(np.uint8)
    if type_name == "Q6_K":  # d is the last field
        raw[:, :, 208:210] = scales[:, :, 0:2]
    else:  # d and dmin lead the block
        raw[:, :, 0:4] = scales
    return raw.reshape(num_rows, num_blocks * type_size)
