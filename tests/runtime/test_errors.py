"""The runtime's error hierarchy: rooted at StencilError, drawn in the module docstring, structured fields."""

from __future__ import annotations

import inspect

import runtime.errors as errors
from grammars.errors import StencilError

_TREE_CHARS = " │├└─"


def _drawn_parents() -> dict[str, str]:
    """class name -> parent name, read from the tree in runtime.errors' docstring."""
    parents: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in errors.__doc__.splitlines():
        name = line.lstrip(_TREE_CHARS).split(" ", 1)[0]
        if not name.endswith("Error"):
            continue
        depth = len(line) - len(line.lstrip(_TREE_CHARS))
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack:
            parents[name] = stack[-1][1]
        stack.append((depth, name))
    return parents


def test_docstring_tree_matches_the_classes() -> None:
    assert errors.__all__ == sorted(errors.__all__)
    defined = {name for name, cls in inspect.getmembers(errors, inspect.isclass) if cls.__module__ == errors.__name__}
    assert defined == set(errors.__all__)
    actual = {name: getattr(errors, name).__mro__[1].__name__ for name in errors.__all__}
    assert _drawn_parents() == actual
    assert all(issubclass(getattr(errors, name), StencilError) for name in errors.__all__)


def test_structured_fields() -> None:
    error = errors.PromptTooLongError(9000, 8192)
    assert (error.num_prompt_tokens, error.max_context_tokens, error.field) == (9000, 8192, "prompt")
    assert "9000" in str(error) and "8192" in str(error)
    assert isinstance(error, errors.RequestError)
    request = errors.RequestError("must be in (0, 1], got 1.5", "top_p")
    assert (request.field, str(request)) == ("top_p", "top_p: must be in (0, 1], got 1.5")
    load = errors.UnsupportedModelError("architecture 'gpt2'", "/models/x")
    assert (load.path, load.reason) == ("/models/x", "architecture 'gpt2'")
    assert str(load) == "architecture 'gpt2' (/models/x)"
    assert isinstance(load, errors.ModelLoadError)
