"""Errors of the runtime: loading a model, and requests the engine cannot serve.

    StencilError                      (grammars.errors) root of every Stencil error
    └── EngineError                   root of the runtime's errors
        ├── ModelLoadError            a model could not be loaded; carries the path
        │   ├── ModelNotFoundError    no file or folder there, or the embedded model package is not installed
        │   ├── CorruptModelError     a file that cannot be read: truncated, malformed, or missing tensors
        │   └── UnsupportedModelError a readable model Stencil does not implement (architecture, quantization, ...)
        ├── ChatTemplateError         the model's chat template does not compile or fails while rendering
        ├── CacheBusyError            the KV block pool cannot hold the work now (running requests use it)
        └── RequestError              a request the engine cannot serve; carries the offending field
            └── PromptTooLongError    the prompt does not fit the context window; carries both numbers

Third-party exceptions (gguf, safetensors, tokenizers, jinja2) are mapped to these once, where the runtime
calls the library, with `raise ... from exc`, so callers never need to know which library failed.
"""

from __future__ import annotations

import os

from grammars.errors import StencilError

__all__ = [
    "CacheBusyError",
    "ChatTemplateError",
    "CorruptModelError",
    "EngineError",
    "ModelLoadError",
    "ModelNotFoundError",
    "PromptTooLongError",
    "RequestError",
    "UnsupportedModelError",
]


class EngineError(StencilError):
    """Root of every error the runtime raises."""


class CacheBusyError(EngineError):
    """The KV block pool is too busy with running requests to hold this work now (retry later, or
    take a path that queues, as generation does)."""


class ModelLoadError(EngineError):
    """A model could not be loaded.

    Attributes:
        path: the file or folder being loaded, as given or as resolved ("" when there is none).
        reason: what is wrong, without the path.
    """

    def __init__(self, reason: str, path: str | os.PathLike[str] = "") -> None:
        self.reason = reason
        self.path = os.fspath(path)
        super().__init__(f"{reason} ({self.path})" if self.path else reason)


class ModelNotFoundError(ModelLoadError):
    """No model at the given path, or the embedded default model's package is not installed."""


class CorruptModelError(ModelLoadError):
    """A model file that cannot be read as what it claims to be: truncated, malformed, tensors missing."""


class UnsupportedModelError(ModelLoadError):
    """A well-formed model that Stencil does not implement: an unknown architecture, quantization type,
    tokenizer kind or tensor. The message names the unsupported thing."""


class ChatTemplateError(EngineError):
    """The model's Jinja2 chat template does not compile, or fails while rendering messages.

    A template that deliberately rejects a conversation (`raise_exception(...)`) raises `RequestError`
    instead, since the request is what is wrong.
    """


class RequestError(EngineError):
    """A request the engine cannot serve as given.

    Attributes:
        field: path of the offending request field, e.g. "top_p" or "messages[2].role".
        reason: what is wrong with it.
    """

    def __init__(self, reason: str, field: str) -> None:
        self.reason = reason
        self.field = field
        super().__init__(f"{field}: {reason}")


class PromptTooLongError(RequestError):
    """The prompt has more tokens than the model's context window can hold.

    Attributes:
        num_prompt_tokens: tokens in the prompt (a lower bound when `is_lower_bound`).
        max_context_tokens: the context window (the model's `max_position_embeddings`, or a lower engine limit).
        is_lower_bound: the prompt was refused from its length in bytes, without tokenizing it whole.
        hint: what the caller can change to make it fit (e.g. the SDK names what its output description took).
    """

    def __init__(
        self,
        num_prompt_tokens: int,
        max_context_tokens: int,
        field: str = "prompt",
        *,
        is_lower_bound: bool = False,
        hint: str | None = None,
    ) -> None:
        self.num_prompt_tokens = num_prompt_tokens
        self.max_context_tokens = max_context_tokens
        self.is_lower_bound = is_lower_bound
        self.hint = hint
        count = f"at least {num_prompt_tokens}" if is_lower_bound else str(num_prompt_tokens)
        reason = f"the prompt has {count} tokens; the context window holds {max_context_tokens}"
        super().__init__(f"{reason}. {hint}" if hint else reason, field)
