"""Stencil's local runtime: a paged-KV, continuously batched decoder with grammar-constrained sampling."""

from runtime.config import ModelConfig
from runtime.engine.constraints import Constraint, TokenMatcher
from runtime.engine.llm_engine import Engine
from runtime.engine.outputs import CompletionDelta, CompletionOutput, RequestOutput, RequestUpdate, Usage
from runtime.engine.sampling_params import SamplingParams
from runtime.engine.sequence import FinishReason, TokenLogprob
from runtime.errors import (
    CacheBusyError,
    ChatTemplateError,
    CorruptModelError,
    EngineError,
    ModelLoadError,
    ModelNotFoundError,
    PromptTooLongError,
    RequestError,
    UnsupportedModelError,
)
from runtime.launch import DEFAULT_DTYPE, load
from runtime.tokenizer import Tokenizer

__all__ = [
    "CacheBusyError",
    "ChatTemplateError",
    "CompletionDelta",
    "CompletionOutput",
    "Constraint",
    "CorruptModelError",
    "DEFAULT_DTYPE",
    "Engine",
    "EngineError",
    "FinishReason",
    "ModelConfig",
    "ModelLoadError",
    "ModelNotFoundError",
    "PromptTooLongError",
    "RequestError",
    "RequestOutput",
    "RequestUpdate",
    "SamplingParams",
    "TokenLogprob",
    "TokenMatcher",
    "Tokenizer",
    "UnsupportedModelError",
    "Usage",
    "load",
]
