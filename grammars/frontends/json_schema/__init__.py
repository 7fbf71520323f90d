"""JSON Schema (drafts 4 to 2020-12) to the grammar IR: exactly the JSON texts valid against a schema."""

from grammars.frontends.json_schema.compiler import schema_grammar
from grammars.frontends.json_schema.instances import CanonicalWriter, canonical_json
from grammars.frontends.json_schema.keywords import ANNOTATIONS, IMPLEMENTED, keyword_matrix_markdown
from grammars.frontends.json_schema.layout import WHITESPACE_POLICIES, Layout

__all__ = [
    "ANNOTATIONS",
    "CanonicalWriter",
    "IMPLEMENTED",
    "Layout",
    "WHITESPACE_POLICIES",
    "canonical_json",
    "keyword_matrix_markdown",
    "schema_grammar",
]
