"""SDK errors: one tree under StencilError, drawn in the module docstring, with structured fields."""

from __future__ import annotations

import inspect

import sdk.errors
from runtime.engine.outputs import Usage
from sdk.errors import GenerationError, IncompleteOutputError, SDKError, ValidationError


def test_every_error_is_drawn_in_the_tree_and_derives_from_the_root() -> None:
    classes = [obj for _, obj in inspect.getmembers(sdk.errors, inspect.isclass) if obj.__module__ == "sdk.errors"]
    assert {cls.__name__ for cls in classes} == set(sdk.errors.__all__)
    for cls in classes:
        assert cls.__name__ in sdk.errors.__doc__
        assert issubclass(cls, SDKError) and cls.__doc__


def test_generation_errors_carry_text_usage_and_reasoning() -> None:
    usage = Usage(prompt_tokens=10, completion_tokens=4)
    error = IncompleteOutputError("cut", text='{"a": ', usage=usage, reasoning="because")
    assert isinstance(error, GenerationError) and not isinstance(error, ValidationError)
    assert (error.text, error.usage, error.reasoning) == ('{"a": ', usage, "because")


def test_validation_error_lists_each_problem_with_its_location() -> None:
    details = [{"type": "greater_than", "loc": ("items", 0, "price"), "msg": "must be > 0", "input": -1}]
    error = ValidationError(details, text="{}", usage=Usage(1, 1))
    assert error.errors() == details and error.errors() is not error.details
    assert "items.0.price: must be > 0 [type=greater_than]" in str(error)
