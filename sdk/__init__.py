"""Stencil's public face: typed, valid output from language models."""

from grammars.errors import StencilError, UnsupportedSchemaError
from grammars.specs import Choice, Lark, Regex, Schema
from runtime.engine.outputs import Usage
from runtime.errors import PromptTooLongError, RequestError
from sdk.backends.base import Backend, BackendRequest
from sdk.client import LLM
from sdk.errors import (
    ClosedError,
    ConstraintFailedError,
    GenerationError,
    IncompleteOutputError,
    SDKError,
    UnsupportedOutputTypeError,
    ValidationError,
)
from sdk.prompts import Example, Prompt
from sdk.results import Result, Timings
from sdk.streaming import Stream
from sdk.sync_client import SyncLLM, SyncStream
from sdk.voting import Vote, Votes

__all__ = [
    "Backend",
    "BackendRequest",
    "Choice",
    "ClosedError",
    "ConstraintFailedError",
    "Example",
    "GenerationError",
    "IncompleteOutputError",
    "LLM",
    "Lark",
    "Prompt",
    "PromptTooLongError",
    "Regex",
    "RequestError",
    "Result",
    "SDKError",
    "Schema",
    "StencilError",
    "Stream",
    "SyncLLM",
    "SyncStream",
    "Timings",
    "UnsupportedOutputTypeError",
    "UnsupportedSchemaError",
    "Usage",
    "ValidationError",
    "Vote",
    "Votes",
]
