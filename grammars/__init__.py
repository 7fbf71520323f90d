"""Stencil's constraint engine: grammars, regexes, JSON Schemas and Python types compiled to token masks."""

from grammars.compiler import Constraint, compile
from grammars.errors import (
    ConstraintLimitError,
    EmptyLanguageError,
    GrammarError,
    GrammarSyntaxError,
    LarkPriorityWarning,
    SchemaError,
    StencilError,
    TokenRejectedError,
    UnsupportedSchemaError,
    UnsupportedSchemaWarning,
)
from grammars.matcher import Matcher
from grammars.specs import Choice, Lark, Regex
from grammars.vocab import Vocabulary

__all__ = [
    "Choice",
    "Constraint",
    "ConstraintLimitError",
    "EmptyLanguageError",
    "GrammarError",
    "GrammarSyntaxError",
    "Lark",
    "LarkPriorityWarning",
    "Matcher",
    "Regex",
    "SchemaError",
    "StencilError",
    "TokenRejectedError",
    "UnsupportedSchemaError",
    "UnsupportedSchemaWarning",
    "Vocabulary",
    "compile",
]
