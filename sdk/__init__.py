"""Stencil's public face: typed, valid output from language models."""

from grammars.errors import StencilError, UnsupportedSchemaError
from grammars.specs import GBNF, Choice, Lark, Regex, Schema
from runtime.engine.outputs import Usage
from runtime.errors import PromptTooLongError, RequestError
from sdk.backends.base import Backend, BackendRequest
from sdk.backends.remote import RemoteError
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
from sdk.options import Speculative
from sdk.pipelines import MapResult, ValidationReport, Validator, Violation, validate
from sdk.prompts import Example, Prompt
from sdk.results import Result, Timings
from sdk.streaming import Stream
from sdk.sync_client import SyncLLM, SyncStream
from sdk.tools import Tool, ToolCall, ToolCallFormatError, ToolDefinitionError, ToolHistoryError
from sdk.voting import Vote, Votes

__all__ = [
    "Backend",
    "BackendRequest",
    "Choice",
    "ClosedError",
    "ConstraintFailedError",
    "Example",
    "GBNF",
    "GenerationError",
    "IncompleteOutputError",
    "LLM",
    "Lark",
    "MapResult",
    "Prompt",
    "PromptTooLongError",
    "Regex",
    "RemoteError",
    "RequestError",
    "Result",
    "SDKError",
    "Schema",
    "Speculative",
    "StencilError",
    "Stream",
    "SyncLLM",
    "SyncStream",
    "Timings",
    "Tool",
    "ToolCall",
    "ToolCallFormatError",
    "ToolDefinitionError",
    "ToolHistoryError",
    "UnsupportedOutputTypeError",
    "UnsupportedSchemaError",
    "Usage",
    "ValidationError",
    "ValidationReport",
    "Validator",
    "Violation",
    "Vote",
    "Votes",
    "validate",
]
