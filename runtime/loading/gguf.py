"""Loading a GGUF file (llama.cpp's format) into a `Checkpoint`.

The header gives the config (`gguf_metadata`) and the tokenizer (`gguf_tokenizer`); the tensors are
read from the memory-mapped file under Hugging Face names and layouts, dequantized to float32 as the
model reads them (`gguf_tensors.GGUFWeights`), and cast to its dtype one at a time.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

from runtime.loading.checkpoint import Checkpoint, check_weight_names
from runtime.loading.gguf_file import read_gguf
from runtime.loading.gguf_metadata import GGUFMetadata, config_from_gguf
from runtime.loading.gguf_tensors import GGUFBlockCodes, GGUFWeights, float32_bytes, stored_matrix_bits
from runtime.loading.gguf_tokenizer import tokenizer_from_gguf
from runtime.loading.progress import LoadProgress

__all__ = ["KEPT_FLOAT32_BYTES", "load_gguf"]

#: A checkpoint whose float32 weights take at most this keeps each tensor once dequantized (the default model:
#: 540 MB, so its later loads skip ~0.5 s of dequantizing); a larger one dequantizes a tensor whenever it is read.
KEPT_FLOAT32_BYTES = 768 * 2**20


def load_gguf(path: Path) -> Checkpoint:
    """Load a GGUF file: config, weights under HF names (dequantized when read), tokenizer.

    Args:
        path: a resolved path to a `.gguf` file.

    Raises:
        CorruptModelError: unreadable or truncated file, missing metadata or tensors.
        UnsupportedModelError: unknown architecture, tensor type, tokenizer, or unused tensors.
    """
    source = str(path)
    progress = LoadProgress(f"Loading {path.name}", num_steps=1)
    try:
        gguf_file = read_gguf(path)
        metadata = GGUFMetadata(gguf_file, source)
        config = config_from_gguf(metadata, gguf_file.tensors)
        tokenizer = tokenizer_from_gguf(metadata)
        keep = float32_bytes(gguf_file.tensors) <= KEPT_FLOAT32_BYTES
        weights = GGUFWeights(gguf_file.tensors, config, source, keep=keep)
        progress.advance()
    finally:
        progress.close()
    check_weight_names(weights, config, source)
    config = dataclasses.replace(config, bos_token_id=tokenizer.bos_token_id, eos_token_ids=tokenizer.eos_token_ids)
    return Checkpoint(
        config=config,
        weights=weights,
        tokenizer=tokenizer,
        source=source,
        stored_bits=stored_matrix_bits(gguf_file.tensors),
        block_codes=functools.partial(GGUFBlockCodes, gguf_file.tensors, config, source),
    )
