"""The keyword registry: closed, consistent, and the published matrix generated from it."""

from pathlib import Path

import pytest

import grammars.frontends.json_schema as json_schema
from grammars.frontends.json_schema import ANNOTATIONS, IMPLEMENTED, keyword_matrix_markdown
from grammars.frontends.json_schema.keywords import KEYWORDS, UNSUPPORTED, keyword_problem

MATRIX = Path(__file__).resolve().parents[2] / "docs" / "json_schema_keywords.md"


def test_public_names_are_pinned():
    assert json_schema.__all__ == sorted(json_schema.__all__)
    assert set(json_schema.__all__) == {
        "ANNOTATIONS",
        "CanonicalWriter",
        "IMPLEMENTED",
        "Layout",
        "WHITESPACE_POLICIES",
        "canonical_json",
        "keyword_matrix_markdown",
        "schema_grammar",
    }


def test_registry_sets_are_disjoint_and_complete():
    assert not IMPLEMENTED & ANNOTATIONS
    assert IMPLEMENTED | ANNOTATIONS == {k.name for k in KEYWORDS}
    assert not set(UNSUPPORTED) & (IMPLEMENTED | ANNOTATIONS)
    assert {"type", "enum", "oneOf", "$ref", "uniqueItems", "unevaluatedProperties", "dependencies"} <= IMPLEMENTED
    assert {"title", "description", "default", "examples", "$comment", "deprecated", "readOnly"} <= ANNOTATIONS


@pytest.mark.parametrize(
    "keyword, fails",
    [
        ("minLength", False),
        ("title", False),
        ("x-vendor", False),
        ("_format", False),
        ("links", False),
        ("@type", False),
        ("//pattern", False),
        ("$dynamicRef", True),
        ("maxLenght", True),
        ("enums", True),
        ("Type", True),
        ("additionalproperties", True),
    ],
)
def test_unknown_keywords_fail_only_when_refused_or_misspelled(keyword, fails):
    assert (keyword_problem(keyword) is not None) == fails


def test_published_matrix_is_current():
    expected = keyword_matrix_markdown()
    assert MATRIX.read_text() == expected, (
        "docs/json_schema_keywords.md is stale; regenerate it with: .venv/bin/python -c "
        "\"from grammars.frontends.json_schema import keyword_matrix_markdown as m; open('docs/json_schema_keywords.md', 'w').write(m())\""
    )
