"""Build a decoder from a config and Hugging Face-named weights, at a chosen precision."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch

from runtime.config import SUPPORTED_ARCHITECTURES, ModelConfig
from runtime.errors import CorruptModelError, UnsupportedModelError
from runtime.model.architectures.checkpoint import rewrite_hf_state_dict
from runtime.model.architectures.gemma3 import Gemma3Transformer
from runtime.model.architectures.llama import Transformer
from runtime.model.block_codes import StoredCodes, quantize_stored
from runtime.model.quantization import Quantization, quantize

if TYPE_CHECKING:
    from runtime.loading.gguf_blocks import BlockCodes

#: The decoder class of each architecture that is not the Llama family's.
_MODEL_CLASSES: dict[str, type[Transformer]] = {"gemma3_text": Gemma3Transformer}

#: Activation dtypes the model runs in.
SUPPORTED_DTYPES = (torch.float32, torch.bfloat16)


def build_model(
    config: ModelConfig,
    weights: Mapping[str, torch.Tensor],
    *,
    dtype: torch.dtype,
    quantization: Quantization = Quantization.NONE,
    block_codes: Mapping[str, BlockCodes] | None = None,
) -> Transformer:
    """A ready-to-run decoder in eval mode, with the weights of a checkpoint.

    The model is built on the meta device and takes the given tensors as its parameters (cast to
    `dtype` one at a time as they are read, sharing memory when they already are), so loading never
    holds two copies: of a GGUF file's lazily dequantized weights, no float32 copy beyond one tensor.

    Args:
        config: the architecture.
        weights: tensors under Hugging Face names with Hugging Face's q/k row order (what
            `runtime.loading.load_checkpoint` returns); q/k/v and gate/up may be separate.
        dtype: activation (and unquantized weight) dtype; float32 reproduces transformers' fp32 logits.
        quantization: `INT8` / `INT4` store linear weights in 8 / 4 bits, `STORED` as `block_codes` holds
            them (all need `dtype=torch.bfloat16`; see `runtime.model.quantization` and `block_codes`).
        block_codes: the stored codes of block-format matrices under Hugging Face names (a checkpoint's
            `block_codes()`), for `STORED`.

    Returns:
        The `Transformer`, without gradients.

    Raises:
        UnsupportedModelError: an architecture, dtype or quantization the decoder does not implement,
            or tensors it does not know.
        CorruptModelError: tensors missing, or of the wrong shape for `config`.
    """
    if config.architecture not in SUPPORTED_ARCHITECTURES:
        supported = ", ".join(SUPPORTED_ARCHITECTURES)
        raise UnsupportedModelError(f"architecture {config.architecture!r} is not supported (supported: {supported})")
    if dtype not in SUPPORTED_DTYPES:
        supported = ", ".join(map(str, SUPPORTED_DTYPES))
        raise UnsupportedModelError(f"dtype {dtype} is not supported (supported: {supported})")
    if quantization is not Quantization.NONE and dtype != torch.bfloat16:
        raise UnsupportedModelError(
            f"{quantization.value} weight-only quantization runs with bfloat16 activations, not {dtype}"
        )
    if quantization is Quantization.STORED and block_codes is None:
        raise UnsupportedModelError("stored quantization needs a checkpoint with block codes (a GGUF file)")
    with torch.device("meta"):
        model = _MODEL_CLASSES.get(config.architecture, Transformer)(config)
    state_dict = {name: tensor.to(dtype).contiguous() for name, tensor in weights.items()}
    try:
        result = model.load_state_dict(state_dict, strict=False, assign=True)
    except RuntimeError as exc:
        raise CorruptModelError(f"weights do not fit the config: {exc}") from exc
    if result.missing_keys:
        raise CorruptModelError(f"missing tensors for {', '.join(result.missing_keys[:8])}")
    if result.unexpected_keys:
        raise UnsupportedModelError(f"unknown tensors {', '.join(result.unexpected_keys[:8])}")
    model.eval().requires_grad_(False)
    if quantization is Quantization.STORED and block_codes is not None:
        return quantize_stored(model, _stored_codes(block_codes, config))
    return quantize(model, quantization)


def _stored_codes(block_codes: Mapping[str, BlockCodes], config: ModelConfig) -> dict[str, StoredCodes]:
    """`block_codes` under the model's parameter names: codes, scales and bases each renamed and fused as the
    model's load hook does its weights (q/k/v and gate/up rows concatenated)."""
    parts: list[dict[str, torch.Tensor]] = [{}, {}, {}]
    for name, arrays in block_codes.items():
        for part, array in zip(parts, arrays, strict=True):
            part[name] = torch.from_numpy(array)
    for part in parts:
        rewrite_hf_state_dict(part, config)
    codes, scales, bases = parts
    return {name: (codes[name], scales[name], bases[name]) for name in codes}
