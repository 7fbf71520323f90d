"""The public namespace of the constraint engine: exactly the intended names, sorted, documented."""

import inspect

import grammars
import grammars.errors

PUBLIC_NAMES = """
    Choice Constraint ConstraintLimitError EmptyLanguageError GBNF GrammarError GrammarSyntaxError Lark
    LarkPriorityWarning Matcher MatcherFailedError Regex RollbackError Schema SchemaError SchemaNestingError StencilError
    TokenRejectedError UnsupportedSchemaError UnsupportedSchemaWarning Vocabulary compile
""".split()


def test_all_is_pinned_and_sorted() -> None:
    assert grammars.__all__ == PUBLIC_NAMES == sorted(PUBLIC_NAMES)


def test_every_public_name_has_a_docstring() -> None:
    for name in grammars.__all__:
        assert getattr(grammars, name).__doc__, name


def test_the_error_tree_in_the_module_docstring_names_every_error() -> None:
    tree = grammars.errors.__doc__ or ""
    for name, value in inspect.getmembers(grammars.errors, inspect.isclass):
        if issubclass(value, (grammars.StencilError, Warning)) and value.__module__ == "grammars.errors":
            assert name in tree, name
