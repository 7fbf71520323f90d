"""The GGUF container: header, key/value metadata and tensor index, parsed straight from a memory map.

`gguf.GGUFReader` builds a numpy view per metadata element, which costs seconds on a tokenizer of
50,000 strings; this parser reads the same layout (GGUF v2/v3, little-endian) with `struct` and keeps
tensor data memory-mapped, in the shapes `gguf.quants.dequantize` takes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

from runtime.errors import CorruptModelError, UnsupportedModelError

__all__ = ["GGUFFile", "GGUFTensor", "read_gguf"]

_MAGIC = b"GGUF"
_DEFAULT_ALIGNMENT = 32
_SCALARS: dict[int, str] = {  # GGUFValueType is an IntEnum: plain ints look its members up
    GGUFValueType.UINT8: "<B",
    GGUFValueType.INT8: "<b",
    GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I",
    GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f",
    GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q",
    GGUFValueType.FLOAT64: "<d",
}
#: Element types of numeric arrays, read in one go.
_ARRAY_DTYPES = {value_type: np.dtype(fmt) for value_type, fmt in _SCALARS.items()}


@dataclass(frozen=True)
class GGUFTensor:
    """One tensor of the file.

    Attributes:
        name: its GGUF name (`blk.0.attn_q.weight`).
        tensor_type: storage type.
        shape: dimensions innermost first, as GGUF writes them.
        data: memory-mapped contents: F32/F16 values, else uint8 rows of quantized blocks.
    """

    name: str
    tensor_type: GGMLQuantizationType
    shape: tuple[int, ...]
    data: np.ndarray


@dataclass(frozen=True)
class GGUFFile:
    """A parsed GGUF file: metadata values as Python data (str, int, float, bool or lists) and tensors."""

    fields: dict[str, Any]
    tensors: list[GGUFTensor]


class _Cursor:
    def __init__(self, buffer: memoryview, source: Path) -> None:
        self.buffer = buffer
        self.offset = 0
        self.source = source

    def take(self, size: int) -> memoryview:
        end = self.offset + size
        if size < 0 or end > len(self.buffer):
            raise CorruptModelError(f"not a readable GGUF file: truncated at byte {self.offset}", self.source)
        chunk = self.buffer[self.offset : end]
        self.offset = end
        return chunk

    def scalar(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        return bytes(self.take(self.scalar("<Q"))).decode("utf-8", errors="replace")

    def value(self, value_type: int) -> Any:
        if value_type == GGUFValueType.STRING:
            return self.string()
        if value_type == GGUFValueType.ARRAY:
            element_type, count = self.scalar("<I"), self.scalar("<Q")
            if element_type == GGUFValueType.STRING:
                return [self.string() for _ in range(count)]
            dtype = _ARRAY_DTYPES.get(element_type)
            if dtype is None:
                return [self.value(element_type) for _ in range(count)]
            return np.frombuffer(self.take(count * dtype.itemsize), dtype=dtype).tolist()
        fmt = _SCALARS.get(value_type)
        if fmt is None:
            raise CorruptModelError(f"not a readable GGUF file: unknown value type {value_type}", self.source)
        return self.scalar(fmt)


def read_gguf(path: Path) -> GGUFFile:
    """Parse a GGUF file's metadata and tensor index; tensor data stays memory-mapped.

    Raises:
        UnsupportedModelError: a tensor type the `gguf` package does not know.
        CorruptModelError: anything else unreadable (bad magic or version, truncated header or data).
    """
    try:
        # A plain ndarray view of the map: numpy's memmap subclass slows every derived array.
        mapped = np.memmap(path, dtype=np.uint8, mode="r").view(np.ndarray)
    except (OSError, ValueError) as exc:
        raise CorruptModelError(f"not a readable GGUF file: {exc}", path) from exc
    cursor = _Cursor(mapped.data, path)
    if bytes(cursor.take(4)) != _MAGIC:
        raise CorruptModelError("not a readable GGUF file: bad magic (not a GGUF file)", path)
    version = cursor.scalar("<I")
    if version not in (2, 3):
        raise CorruptModelError(f"not a readable GGUF file: unsupported GGUF version {version}", path)
    num_tensors, num_fields = cursor.scalar("<Q"), cursor.scalar("<Q")
    fields = {}
    for _ in range(num_fields):
        key = cursor.string()
        fields[key] = cursor.value(cursor.scalar("<I"))
    infos = []
    for _ in range(num_tensors):
        name = cursor.string()
        shape = tuple(cursor.scalar("<Q") for _ in range(cursor.scalar("<I")))
        infos.append((name, shape, cursor.scalar("<I"), cursor.scalar("<Q")))
    alignment = fields.get("general.alignment", _DEFAULT_ALIGNMENT)
    data_start = -(-cursor.offset // alignment) * alignment
    return GGUFFile(fields, [_tensor(mapped, data_start, info, path) for info in infos])


def _tensor(mapped: np.ndarray, data_start: int, info: tuple[str, tuple[int, ...], int, int], path: Path) -> GGUFTensor:
    name, shape, type_value, offset = info
    try:
        tensor_type = GGMLQuantizationType(type_value)
    except ValueError:
        raise UnsupportedModelError(f"unknown GGML tensor type {type_value} (tensor {name!r})", path) from None
    block_size, type_size = GGML_QUANT_SIZES[tensor_type]
    dims = [int(dim) for dim in reversed(shape)] or [1]  # row-major, outermost first
    if dims[-1] % block_size:
        raise CorruptModelError(f"tensor {name!r}: {dims[-1]} values per row is not whole blocks of {block_size}", path)
    dtype: np.dtype[np.generic]
    if tensor_type in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
        dtype = np.dtype(np.float32 if tensor_type == GGMLQuantizationType.F32 else np.float16)
    else:
        dtype, dims[-1] = np.dtype(np.uint8), dims[-1] // block_size * type_size
    start = data_start + offset
    size = int(np.prod(dims)) * dtype.itemsize
    if start + size > mapped.size:
        raise CorruptModelError(f"not a readable GGUF file: tensor {name!r} is truncated", path)
    data = mapped[start : start + size].view(dtype).reshape(dims)
    return GGUFTensor(name, tensor_type, shape, data)
