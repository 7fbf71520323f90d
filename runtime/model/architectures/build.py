"""Build a decoder from a config and Hugging Face-named weights, at a chosen precision."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import torch

from runtime.config import SUPPORTED_ARCHITECTURES, ModelConfig
from runtime.errors import CorruptModelError, UnsupportedModelError
from runtime.loading.checkpoint import read_as
from runtime.model.architectures.checkpoint import rewrite_hf_state_dict
from runtime.model.architectures.gemma3 import Gemma3Transformer
from runtime.model.architectures.llama import Transformer
from runtime.model.block_codes import StoredCodes, stored_quantizer
from runtime.model.quantization import Quantization, linear_quantizer, place_in_huge_pages, swap_linears

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
    layer_of = None
    if quantization is Quantization.STORED and block_codes is not None:
        layer_of = stored_quantizer(_StoredCodes(block_codes, config).get)
    elif quantization is not Quantization.NONE:
        layer_of = linear_quantizer(quantization)
    unexpected: list[str] = []
    for layer, names in _parts(weights, config):
        # One part at a time: a large model's dense weights never exist whole when it is quantized.
        state_dict = {name: read_as(weights, name, dtype).contiguous() for name in names}
        try:
            result = model.load_state_dict(state_dict, strict=False, assign=True)
        except RuntimeError as exc:
            raise CorruptModelError(f"weights do not fit the config: {exc}") from exc
        unexpected += result.unexpected_keys
        del state_dict
        block = model.layers[layer] if layer is not None else None
        if block is not None and layer_of is not None and not any(p.is_meta for p in block.parameters()):
            swap_linears(block, (), layer_of, prefix=f"layers.{layer}.")  # a layer missing tensors is named below
    missing = [name for name, tensor in (*model.named_parameters(), *model.named_buffers()) if tensor.is_meta]
    if missing:
        raise CorruptModelError(f"missing tensors for {', '.join(missing[:8])}")
    if unexpected:
        raise UnsupportedModelError(f"unknown tensors {', '.join(unexpected[:8])}")
    model.eval().requires_grad_(False)
    if layer_of is not None:
        swap_linears(model, ("lm_head",), layer_of)
        place_in_huge_pages(model)
    return model


_LAYER_NAME = re.compile(r"model\.layers\.(\d+)\.")
#: A model parameter's decoder layer (`layers.{i}.`).
_MODEL_LAYER_NAME = re.compile(r"layers\.(\d+)\.")
#: An expert's matrix among a mixture-of-experts layer's stacked ones: (the stacked name, the expert).
_EXPERT_MATRIX = re.compile(r"(.+\.experts_(?:gate_up|down))\.(\d+)\.weight")


def _parts(names: Iterable[str], config: ModelConfig) -> list[tuple[int | None, list[str]]]:
    """Tensor names by decoder layer (Hugging Face's `model.layers.{i}.`), the others first."""
    by_layer: dict[int | None, list[str]] = {None: []}
    for name in names:
        match = _LAYER_NAME.match(name)
        layer = int(match.group(1)) if match is not None and int(match.group(1)) < config.num_layers else None
        by_layer.setdefault(layer, []).append(name)
    return sorted(by_layer.items(), key=lambda item: -1 if item[0] is None else item[0])


class _StoredCodes:
    """A checkpoint's block codes under the model's parameter names, read one decoder layer at a time: codes,
    scales and bases each renamed and fused as the model's load hook does its weights (q/k/v and gate/up
    rows concatenated). The last layer read is held until another is."""

    def __init__(self, block_codes: Mapping[str, BlockCodes], config: ModelConfig) -> None:
        self._block_codes = block_codes
        self._config = config
        self._names: dict[int | None, list[str]] = dict(_parts(block_codes, config))
        self._layer: tuple[int | None, dict[str, StoredCodes]] | None = None

    def get(self, name: str) -> StoredCodes | None:
        """The codes of model parameter `name`, or None where the checkpoint stores none; an expert's matrix
        (`...experts_gate_up.{e}.weight`) is its slice of the stacked codes."""
        expert = _EXPERT_MATRIX.fullmatch(name)
        if expert is not None:
            stacked = self.get(expert.group(1))
            index = int(expert.group(2))
            return None if stacked is None else (stacked[0][index], stacked[1][index], stacked[2][index])
        match = _MODEL_LAYER_NAME.match(name)
        layer = int(match.group(1)) if match is not None else None
        if self._layer is None or self._layer[0] != layer:
            parts: list[dict[str, torch.Tensor]] = [{}, {}, {}]
            for hf_name in self._names.get(layer, []):
                for part, array in zip(parts, self._block_codes[hf_name], strict=True):
                    part[hf_name] = torch.from_numpy(array)
            for part in parts:
                rewrite_hf_state_dict(part, self._config)
            codes, scales, bases = parts
            self._layer = (layer, {key: (codes[key], scales[key], bases[key]) for key in codes})
        return self._layer[1].get(name)
