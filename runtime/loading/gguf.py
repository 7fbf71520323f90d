"""Loading a GGUF file (llama.cpp's format) into a `Checkpoint`.

The header gives the config (`gguf_metadata`) and the tokenizer (`gguf_tokenizer`); the tensors are
dequantized to float32 and put in Hugging Face names and layouts (`gguf_tensors`). The model casts
them to its dtype.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from types import MappingProxyType

from runtime.loading.checkpoint import Checkpoint, check_weight_names
from runtime.loading.gguf_file import read_gguf
from runtime.loading.gguf_metadata import GGUFMetadata, config_from_gguf
from runtime.loading.gguf_tensors import gguf_to_hf_block_codes, gguf_to_hf_weights, stored_matrix_bits
from runtime.loading.gguf_tokenizer import tokenizer_from_gguf
from runtime.loading.progress import LoadProgress

__all__ = ["load_gguf"]


def load_gguf(path: Path) -> Checkpoint:
    """Load a GGUF file: config, dequantized weights under HF names, tokenizer.

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
        progress.add_steps(len(gguf_file.tensors))
        progress.advance()
        metadata = GGUFMetadata(gguf_file, source)
        config = config_from_gguf(metadata, gguf_file.tensors)
        tokenizer = tokenizer_from_gguf(metadata)
        weights = gguf_to_hf_weights(gguf_file.tensors, config, source, progress)
    finally:
        progress.close()
    check_weight_names(weights, config, source)
    config = dataclasses.replace(config, bos_token_id=tokenizer.bos_token_id, eos_token_ids=tokenizer.eos_token_ids)
    return Checkpoint(
        config=config,
        weights=MappingProxyType(weights),
        tokenizer=tokenizer,
        source=source,
        stored_bits=stored_matrix_bits(gguf_file.tensors),
        block_codes=functools.partial(gguf_to_hf_block_codes, gguf_file.tensors, config, source),
    )
