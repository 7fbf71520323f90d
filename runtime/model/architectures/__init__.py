"""Decoder models: the Llama family, dense and sparse-MoE, and Gemma 3, built from Hugging Face-named weights."""

from runtime.model.architectures.build import SUPPORTED_DTYPES, Quantization, build_model
from runtime.model.architectures.llama import Transformer

__all__ = ["SUPPORTED_DTYPES", "Quantization", "Transformer", "build_model"]
