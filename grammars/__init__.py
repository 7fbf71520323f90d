"""Stencil's constraint engine: grammars, regexes, JSON Schemas and Python types compiled to token masks."""

from grammars.compiler import Constraint, compile
from grammars.errors import (
    ConstraintLimitError,
    EmptyLanguageError,
    GrammarError,
    GrammarSyntaxError,
    LarkPriorityWarning,
    MatcherFailedError,
    RollbackError,
    SchemaError,
    SchemaNestingError,
    StencilError,
    TokenRejectedError,
    UnsupportedSchemaError,
    UnsupportedSchemaWarning,
)
from grammars.masking.matcher import Matcher
from grammars.masking.vocab import Vocabulary
from grammars.specs import GBNF, Choice, Lark, Regex, Schema

__all__ = [
    "Choice",
    "Constraint",
    "ConstraintLimitError",
    "EmptyLanguageError",
    "GBNF",
    "GrammarError",
    "GrammarSyntaxError",
    "Lark",
    "LarkPriorityWarning",
    "Matcher",
    "MatcherFailedError",
    "Regex",
    "RollbackError",
    "Schema",
    "SchemaError",
    "SchemaNestingError",
    "StencilError",
    "TokenRejectedError",
    "UnsupportedSchemaError",
    "UnsupportedSchemaWarning",
    "Vocabulary",
    "compile",
]
