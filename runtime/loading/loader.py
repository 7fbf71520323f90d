"""`load_checkpoint`: resolve what the user named, dispatch on its format, cache the result.

A model is named by None (the embedded default), a `.gguf` file, or a Hugging Face folder. Loads are
cached in-process by (resolved path, file fingerprint), so a second `runtime.load()` of the same
unchanged model is instant; a changed file (mtime or size) is loaded afresh.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

from runtime.errors import CorruptModelError, ModelNotFoundError, RequestError, UnsupportedModelError
from runtime.loading.checkpoint import Checkpoint
from runtime.loading.default_model import default_model_path
from runtime.loading.gguf import load_gguf
from runtime.loading.gguf_tensors import GGUFWeights
from runtime.loading.hf import load_hf_folder

__all__ = ["MAX_CACHED_BYTES", "clear_checkpoint_cache", "load_checkpoint"]

#: Weight bytes the cache keeps alive (the default model's float32 weights: ~540 MB; a large GGUF file keeps
#: none, its tensors dequantized when read). The most recently used checkpoint is always kept, whatever its
#: size; older ones go first.
MAX_CACHED_BYTES = 2 * 1024**3
_GGUF_MAGIC = b"GGUF"

_Fingerprint = tuple[tuple[str, int, int], ...]
_cache: OrderedDict[tuple[str, _Fingerprint], Checkpoint] = OrderedDict()
_cache_lock = threading.Lock()


def _fingerprint(path: Path) -> _Fingerprint:
    """(name, mtime_ns, size) of the file, or of every file directly inside the folder."""
    files = sorted(entry for entry in path.iterdir() if entry.is_file()) if path.is_dir() else [path]
    return tuple((file.name, (stat := file.stat()).st_mtime_ns, stat.st_size) for file in files)


def _num_bytes(checkpoint: Checkpoint) -> int:
    """Bytes of the checkpoint's weights held in memory (a GGUF file's: the dequantized tensors it keeps)."""
    weights = checkpoint.weights
    if isinstance(weights, GGUFWeights):
        return weights.resident_bytes
    return sum(tensor.numel() * tensor.element_size() for tensor in weights.values())


def _resolve(model: str | os.PathLike[str] | None) -> Path:
    if model is None:
        return default_model_path().resolve()
    if not isinstance(model, (str, os.PathLike)):
        raise RequestError(f"expected None, a path string or a PathLike, got {type(model).__name__}", "model")
    path = Path(model).expanduser()
    if not path.exists():
        raise ModelNotFoundError("no such file or folder", path)
    return path.resolve()


def _load_uncached(path: Path) -> Checkpoint:
    if path.is_dir():
        return load_hf_folder(path)
    try:
        with path.open("rb") as file:
            magic = file.read(len(_GGUF_MAGIC))
    except OSError as exc:
        raise CorruptModelError(f"unreadable file: {exc}", path) from exc
    if magic == _GGUF_MAGIC:
        return load_gguf(path)
    if path.suffix.lower() == ".gguf":
        raise CorruptModelError(f"not a GGUF file (starts with {magic!r}, not {_GGUF_MAGIC!r})", path)
    raise UnsupportedModelError("expected a .gguf file or a Hugging Face model folder", path)


def load_checkpoint(model: str | os.PathLike[str] | None = None) -> Checkpoint:
    """Load a model's config, weights and tokenizer, from the cache when unchanged since last time.

    Args:
        model: None for the embedded SmolLM2-135M-Instruct, a `.gguf` file, or a Hugging Face folder
            (config.json, *.safetensors, tokenizer.json).

    Returns:
        The checkpoint; shared with other loads of the same files, so treat it as read-only.

    Raises:
        ModelNotFoundError: nothing at the path, the embedded model's package missing, or a folder
            without config.json / weights / tokenizer.json.
        CorruptModelError: a file that cannot be read (truncated, malformed, missing tensors).
        UnsupportedModelError: an architecture, tensor type or tokenizer Stencil does not implement.
        RequestError: `model` is neither None nor a path (field "model").
    """
    path = _resolve(model)
    key = (str(path), _fingerprint(path))
    with _cache_lock:  # one load at a time: two threads asking for one model load it once
        checkpoint = _cache.get(key)
        if checkpoint is None:
            checkpoint = _load_uncached(path)
            _cache[key] = checkpoint
        _cache.move_to_end(key)
        while len(_cache) > 1 and sum(map(_num_bytes, _cache.values())) > MAX_CACHED_BYTES:
            _cache.popitem(last=False)
        return checkpoint


def clear_checkpoint_cache() -> None:
    """Drop every cached checkpoint (their memory is freed once no engine uses them)."""
    with _cache_lock:
        _cache.clear()
