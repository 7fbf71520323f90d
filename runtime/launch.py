"""Launching an engine: a model name in, a ready `Engine` out.

`load` chains the pieces: `load_checkpoint` (GGUF or Hugging Face folder; None is the embedded
SmolLM2-135M-Instruct), `build_model` at the chosen dtype, a `ModelRunner` whose KV pool is sized
from a memory budget, and the `Engine` over them.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

import torch

from runtime.engine.llm_engine import DEFAULT_MAX_MASK_SECONDS, Engine, context_window
from runtime.engine.speculative import SpeculativeConfig
from runtime.errors import RequestError
from runtime.loading import load_checkpoint
from runtime.loading.checkpoint import Checkpoint
from runtime.loading.progress import ReadProgress
from runtime.model.architectures import Quantization, build_model
from runtime.model.runner import ModelRunner

#: KV pool size `load` gives the engine by default (SmolLM2-135M: ~22k positions in bfloat16).
DEFAULT_KV_CACHE_BYTES = 512 * 2**20
#: Activation dtype `load` uses by default: on CPUs with bfloat16 support about twice fp32's speed.
DEFAULT_DTYPE = torch.bfloat16
_DTYPE_NAMES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def load(
    model: str | os.PathLike[str] | None = None,
    dtype: torch.dtype | str | None = None,
    *,
    kv_cache_bytes: int = DEFAULT_KV_CACHE_BYTES,
    block_size: int = 16,
    quantization: Quantization | None = None,
    max_num_seqs: int = 32,
    max_num_batched_tokens: int = 4096,
    max_model_len: int | None = None,
    enable_prefix_caching: bool = True,
    max_mask_seconds: float | None = DEFAULT_MAX_MASK_SECONDS,
    speculative: SpeculativeConfig | None = None,
) -> Engine:
    """Load a model and return an engine ready to generate.

    Args:
        model: None for the embedded SmolLM2-135M-Instruct, a `.gguf` file, or a Hugging Face folder.
        dtype: activation dtype (torch.float32 / torch.bfloat16, or "float32" / "bfloat16");
            None uses `DEFAULT_DTYPE` (bfloat16). float32 reproduces transformers' fp32 outputs.
        kv_cache_bytes: memory for the paged KV cache; it always holds at least one full-context sequence.
        block_size: positions per KV block.
        quantization: weight storage (`runtime.model.architectures.Quantization`; all but NONE need
            bfloat16). None picks what stays exact when `dtype` is left to the default: INT4 for a
            checkpoint stored in 4 bits (the embedded Q4_1 GGUF keeps its very weights, at about 3x the
            decode speed of bfloat16), STORED for a GGUF file of block formats up to 8 bits (Q4_K_M,
            Q5_K_M, Q6_K, Q8_0 files: the file's own codes, bit for bit), else NONE.
        max_num_seqs, max_num_batched_tokens, max_model_len, enable_prefix_caching, max_mask_seconds,
            speculative: see `Engine`.

    Raises:
        ModelNotFoundError, CorruptModelError, UnsupportedModelError: the model cannot be loaded.
        RequestError: a dtype name or limit that is not valid, or STORED for a checkpoint without block
            codes (field names it).
    """
    dtype_is_default = dtype is None
    dtype = _resolve_dtype(dtype)
    for name, value, minimum in (("block_size", block_size, 1), ("kv_cache_bytes", kv_cache_bytes, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise RequestError(f"must be an int >= {minimum}, got {value!r}", name)
    checkpoint = load_checkpoint(model)
    if quantization is None:
        quantization = _exact_quantization(checkpoint) if dtype_is_default else Quantization.NONE
    config = checkpoint.config
    context_len = context_window(config, max_model_len)  # checked before memory is committed to it
    block_codes = None
    if quantization is Quantization.STORED:
        if checkpoint.block_codes is None:
            raise RequestError("stored quantization needs a GGUF file's block codes", "quantization")
        block_codes = checkpoint.block_codes()
    weights = ReadProgress(checkpoint.weights, f"Building {Path(checkpoint.source).name}")
    try:
        network = build_model(config, weights, dtype=dtype, quantization=quantization, block_codes=block_codes)
    finally:
        weights.progress.close()
    bytes_per_block = block_size * 2 * config.num_layers * config.num_kv_heads * config.head_dim * dtype.itemsize
    num_blocks = max(kv_cache_bytes // bytes_per_block, -(-context_len // block_size))
    runner = ModelRunner(network, num_blocks=num_blocks, block_size=block_size)
    _return_freed_memory()
    return Engine(
        runner,
        checkpoint.tokenizer,
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens,
        max_model_len=context_len,
        enable_prefix_caching=enable_prefix_caching,
        max_mask_seconds=max_mask_seconds,
        speculative=speculative,
    )


def _return_freed_memory() -> None:
    """Give the C heap's free pages back to the system (glibc's `malloc_trim`): building a model frees its
    transient float32 and bfloat16 copies into a heap that would otherwise stay resident (Gemma 3 270M:
    1.8 GB after the load, 1.1 GB after this; benchmarks/memory.py)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return
    libc.malloc_trim(0)


def _exact_quantization(checkpoint: Checkpoint) -> Quantization:
    """The fastest weight storage that keeps the checkpoint's weights: INT4 for 4-bit files, the file's own block
    codes for GGUF files of wider block formats (a Q4_K_M file's Q5_0, Q6_K and Q8_0 matrices among its Q4_K
    ones), else bfloat16."""
    if checkpoint.stored_bits <= 4:
        return Quantization.INT4
    if checkpoint.block_codes is not None and checkpoint.stored_bits <= 8:
        return Quantization.STORED
    return Quantization.NONE


def _resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    if dtype is None:
        return DEFAULT_DTYPE
    if isinstance(dtype, str):
        if dtype not in _DTYPE_NAMES:
            raise RequestError(f"unknown dtype {dtype!r} (known: {', '.join(_DTYPE_NAMES)})", "dtype")
        return _DTYPE_NAMES[dtype]
    if not isinstance(dtype, torch.dtype):
        raise RequestError(f"expected a torch.dtype or a name, got {type(dtype).__name__}", "dtype")
    return dtype
