"""Sets of tokens as bits: token `t` is bit `t % 64` of word `t // 64` of a little-endian uint64 array
(numpy's `packbits` with `bitorder="little"`, read eight bytes a word).

A new state's mask is assembled in bits (`GroupSettler.assemble`): its walk's inside tokens copied, its
boundary tokens set by the settle, EOS set. That is an eighth of a bool mask's memory; copying,
zeroing and packing the bool arrays was ~8 us of a new mask on a 49k-token vocabulary and ~17 on a
262k one. The bits are also the mask's identity (most new states' masks equal one made before), so
only a mask new to its table becomes a bool array (`to_mask`), once. Compiled where the extension is
built (`grammars.masking._walk`), else numpy.
"""

from __future__ import annotations

import numpy as np

from grammars.masking import token_walk

#: The dtype of a token set's words.
WORD = np.dtype("<u8")


def num_words(size: int) -> int:
    """Words of a set of `size` tokens."""
    return (size + 63) // 64


def from_ids(ids: np.ndarray, size: int) -> np.ndarray:
    """The set of tokens `ids` (each below `size`)."""
    mask = np.zeros(num_words(size) * 64, dtype=bool)
    mask[ids] = True
    return np.packbits(mask, bitorder="little").view(WORD)


def assign(bits: np.ndarray, ids: list[int] | np.ndarray, value: bool) -> None:
    """Adds the tokens `ids` to `bits` (`value` True) or takes them out."""
    ids = np.asarray(ids, dtype=np.int64)
    flags = np.left_shift(np.uint64(1), (ids & 63).astype(np.uint64))
    if value:
        np.bitwise_or.at(bits, ids >> 6, flags)
    else:
        np.bitwise_and.at(bits, ids >> 6, ~flags)


def word_flags(ids: list[int] | tuple[int, ...]) -> tuple[tuple[int, np.uint64, np.uint64], ...]:
    """`ids` grouped by word, as (word, the bits of its ids, the other bits): for `assign_words`,
    which sets or clears a few tokens (those a distinct-keys mask refuses) at a scalar store each,
    where `assign`'s scatter takes microseconds."""
    grouped: dict[int, int] = {}
    for token in ids:
        grouped[token >> 6] = grouped.get(token >> 6, 0) | 1 << (token & 63)
    return tuple((word, np.uint64(flags), ~np.uint64(flags)) for word, flags in sorted(grouped.items()))


def assign_words(bits: np.ndarray, words: tuple[tuple[int, np.uint64, np.uint64], ...], value: bool) -> None:
    """`assign` of the tokens `word_flags` grouped."""
    for word, flags, others in words:
        if value:
            bits[word] |= flags
        else:
            bits[word] &= others


def contains(bits: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """bool per id of `ids`: whether `bits` holds it."""
    ids = np.asarray(ids, dtype=np.int64)
    return ((bits[ids >> 6] >> (ids & 63).astype(np.uint64)) & np.uint64(1)).astype(bool)


def identity(bits: np.ndarray) -> tuple[int, bytes]:
    """A hash of `bits` and their bytes: equal sets have equal bytes (the hash only picks a bucket).
    Compiled: one call of a few microseconds on a 262k-token vocabulary."""
    if token_walk.native_walk is not None:
        return token_walk.native_walk.bits_identity(bits)
    packed = bits.tobytes()
    return hash(packed), packed


def to_mask(packed: bytes | np.ndarray, size: int) -> np.ndarray:
    """bool[size]: True at the tokens of a set (its words or their bytes); a fresh, writable array."""
    if token_walk.native_walk is not None:
        return np.frombuffer(token_walk.native_walk.bool_mask(packed, size), dtype=bool)
    raw = np.frombuffer(packed, dtype=np.uint8)
    return np.unpackbits(raw, count=size, bitorder="little").view(bool)
