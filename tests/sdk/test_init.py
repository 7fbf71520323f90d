"""The public namespace: exactly the intended names, sorted, each documented."""

from __future__ import annotations

import grammars.errors
import sdk

PUBLIC_NAMES = """
    Backend BackendRequest Choice ClosedError ConstraintFailedError Example GBNF GenerationError
    IncompleteOutputError LLM Lark MapResult Prompt PromptTooLongError Regex RemoteError RequestError
    Result SDKError Schema Speculative StencilError Stream SyncLLM SyncStream Timings Tool ToolCall
    ToolCallFormatError ToolDefinitionError ToolHistoryError UnsupportedOutputTypeError
    UnsupportedSchemaError Usage ValidationError ValidationReport Validator Violation Vote Votes validate
""".split()


def test_all_is_pinned_and_sorted() -> None:
    assert sdk.__all__ == PUBLIC_NAMES == sorted(PUBLIC_NAMES)


def test_every_public_name_exists_and_has_a_docstring() -> None:
    for name in sdk.__all__:
        assert getattr(sdk, name).__doc__, name


def test_stencil_error_is_the_root_of_every_stencil_error() -> None:
    assert sdk.StencilError is grammars.errors.StencilError
    for name in sdk.__all__:
        value = getattr(sdk, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, sdk.StencilError), name
