"""The keyword registry: what Stencil enforces, what it resolves, what it ignores as annotation.

Like llguidance's IMPLEMENTED / META_AND_ANNOTATIONS lists, the registry says what each keyword
does. A JSON Schema keyword that changes validity and is not enforced (`$dynamicRef`, ...), or a
keyword that looks like a misspelling of an enforced one (`maxLenght`, `enums`, `Type`), raises
`UnsupportedSchemaError` naming it (a warning under `lenient=True`). Any other keyword belongs to
no JSON Schema vocabulary: the specification makes it an annotation, and real schemas are full of
them (`x-*`, `_format`, `markdownDescription`, hyper-schema `links`), so it is ignored.

The published matrix (`docs/json_schema_keywords.md`) is generated from this table by
`keyword_matrix_markdown()`, and a test keeps the file current.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass


@dataclass(frozen=True)
class Keyword:
    """One row of the registry.

    `status`: "enforced" (the grammar admits exactly the valid texts, or compiling raises),
    "resolved" (structure: references, identifiers, definitions), or "annotation" (no effect on
    validity, ignored). `note` says how, and where enforcement stops.
    """

    name: str
    status: str
    applies_to: str
    note: str


_E, _R, _A = "enforced", "resolved", "annotation"

KEYWORDS: tuple[Keyword, ...] = (
    Keyword("type", _E, "any", "string or array of types; `integer` emits canonical integers (`1`, never `1.0`)"),
    Keyword(
        "enum",
        _E,
        "any",
        "any JSON values, filtered by the sibling keywords; emitted in canonical form (large enums become a trie)",
    ),
    Keyword("const", _E, "any", "as a one-value enum"),
    Keyword(
        "allOf",
        _E,
        "any",
        "merged exactly: types intersected, properties/required merged, bounds tightened, patterns intersected",
    ),
    Keyword("anyOf", _E, "any", "union of the branches"),
    Keyword(
        "oneOf",
        _E,
        "any",
        "union when the branches are provably disjoint (types, const/enum discriminators, ranges, patterns); else exact via complements where they exist; else an error (lenient: anyOf with a warning)",
    ),
    Keyword(
        "not",
        _E,
        "any",
        "complement per type: exact for null/boolean/number/string/enum, objects with required/properties/counts, arrays with items/counts/contains; else an error",
    ),
    Keyword("if", _E, "any", "(if and then) or (not if and else): needs the complement of `if`, see `not`"),
    Keyword("then", _E, "any", "with `if`"),
    Keyword("else", _E, "any", "with `if`"),
    Keyword(
        "$ref",
        _E,
        "any",
        "local pointers, `$id`/`$anchor` resolution, recursion as recursive rules; remote documents only from `resources`; siblings ignored in drafts 4-7",
    ),
    Keyword(
        "minimum", _E, "number", "exact on decimal text; a bound other than zero rejects exponent notation (sound)"
    ),
    Keyword("maximum", _E, "number", "as minimum"),
    Keyword("exclusiveMinimum", _E, "number", "number form (draft 6+) and boolean form (draft 4)"),
    Keyword("exclusiveMaximum", _E, "number", "as exclusiveMinimum"),
    Keyword(
        "multipleOf",
        _E,
        "number",
        "residue automaton over the digits; prime-power factors of the scaled modulus up to 100, at most 24 integer digits",
    ),
    Keyword("minLength", _E, "string", "code points of the decoded string, a counter (never unrolled)"),
    Keyword("maxLength", _E, "string", "as minLength"),
    Keyword(
        "pattern", _E, "string", "ECMAScript regex, unanchored search; escapes in the JSON text decode before matching"
    ),
    Keyword("format", _E, "string", "asserted (see the format list); unknown formats are an error"),
    Keyword("items", _E, "array", "schema form; array form (drafts 4-2019) as prefixItems"),
    Keyword("prefixItems", _E, "array", "positional schemas"),
    Keyword("additionalItems", _E, "array", "with the array form of items"),
    Keyword("minItems", _E, "array", "a counter"),
    Keyword("maxItems", _E, "array", "a counter"),
    Keyword(
        "uniqueItems",
        _E,
        "array",
        "when items come from a finite domain of at most 8 values (booleans, null, enums; positional items too), or at most one item, or provably distinct positional items; else an error (strings, numbers and objects from an open domain are refused)",
    ),
    Keyword(
        "contains",
        _E,
        "array",
        "the item schema is split into matching / non-matching parts (needs the complement of `contains`)",
    ),
    Keyword("minContains", _E, "array", "with contains, counts up to 16"),
    Keyword("maxContains", _E, "array", "with contains, counts up to 16"),
    Keyword(
        "unevaluatedItems",
        _E,
        "array",
        "items after the evaluated prefix when no `items` evaluates them; an error together with contains",
    ),
    Keyword(
        "properties", _E, "object", "emitted in declared order; required ones mandatory, optional ones may be skipped"
    ),
    Keyword("required", _E, "object", "mandatory keys (emitted in declared order)"),
    Keyword(
        "additionalProperties",
        _E,
        "object",
        "keys outside properties/patternProperties, after the declared ones; every spelling of a declared key excluded",
    ),
    Keyword("patternProperties", _E, "object", "key space split by pattern overlap (exact)"),
    Keyword("propertyNames", _E, "object", "intersected with every key"),
    Keyword("minProperties", _E, "object", "counted over declared and additional keys"),
    Keyword("maxProperties", _E, "object", "counted over declared and additional keys"),
    Keyword("dependentRequired", _E, "object", "tracked in the declared-order emission"),
    Keyword("dependentSchemas", _E, "object", "split: key present and schema, or key absent"),
    Keyword("dependencies", _E, "object", "draft 4-7 form of dependentRequired / dependentSchemas"),
    Keyword(
        "unevaluatedProperties",
        _E,
        "object",
        "keys no keyword of the same alternative evaluated (conservative across anyOf/oneOf branches)",
    ),
    Keyword("$defs", _R, "any", "definitions container"),
    Keyword("definitions", _R, "any", "definitions container (drafts 4-7, accepted everywhere)"),
    Keyword("$id", _R, "any", "changes the base URI; embedded resources"),
    Keyword("id", _R, "any", "draft 4 `$id`; an annotation in later drafts"),
    Keyword("$anchor", _R, "any", "plain-name fragments"),
    Keyword("$dynamicAnchor", _R, "any", "resolved as a plain anchor ($dynamicRef itself is not supported)"),
    Keyword("$schema", _R, "any", "selects the dialect (draft 4, 6, 7, 2019-09, 2020-12; default 2020-12)"),
    Keyword("$vocabulary", _A, "any", "meta-schemas only"),
    Keyword("$comment", _A, "any", ""),
    Keyword("title", _A, "any", ""),
    Keyword("description", _A, "any", ""),
    Keyword("default", _A, "any", ""),
    Keyword("examples", _A, "any", ""),
    Keyword("example", _A, "any", "OpenAPI"),
    Keyword("deprecated", _A, "any", ""),
    Keyword("readOnly", _A, "any", ""),
    Keyword("writeOnly", _A, "any", ""),
    Keyword("contentMediaType", _A, "string", "an annotation in 2019-09+; not asserted"),
    Keyword("contentEncoding", _A, "string", "as contentMediaType"),
    Keyword("contentSchema", _A, "string", "as contentMediaType"),
    Keyword("discriminator", _A, "object", "OpenAPI hint; oneOf decides disjointness itself"),
    Keyword("markdownDescription", _A, "any", "editor hint (VS Code)"),
    Keyword("markdownEnumDescriptions", _A, "any", "editor hint"),
    Keyword("enumDescriptions", _A, "any", "editor hint"),
    Keyword("deprecationMessage", _A, "any", "editor hint"),
    Keyword("errorMessage", _A, "any", "editor hint"),
    Keyword("patternErrorMessage", _A, "any", "editor hint"),
    Keyword("defaultSnippets", _A, "any", "editor hint"),
    Keyword("doNotSuggest", _A, "any", "editor hint"),
    Keyword("suggestSortText", _A, "any", "editor hint"),
    Keyword("allowComments", _A, "any", "editor hint"),
    Keyword("allowTrailingCommas", _A, "any", "editor hint"),
)

#: Known keywords that change validity but that Stencil refuses, with the reason.
UNSUPPORTED: dict[str, str] = {
    "$dynamicRef": "dynamic scope resolution is not supported",
    "$recursiveRef": "dynamic scope resolution (2019-09) is not supported",
    "$recursiveAnchor": "dynamic scope resolution (2019-09) is not supported",
}

#: Keywords the compiler enforces or resolves.
IMPLEMENTED: frozenset[str] = frozenset(k.name for k in KEYWORDS if k.status != _A)
#: Keywords with no effect on validity.
ANNOTATIONS: frozenset[str] = frozenset(k.name for k in KEYWORDS if k.status == _A)
#: Prefixes of extension keywords (OpenAPI/Kubernetes `x-`, disabled `_keyword`s) treated as annotations.
EXTENSION_PREFIXES = ("x-", "_")
#: How close (difflib ratio) an unknown keyword must be to an enforced one to count as its misspelling.
MISSPELLING_CUTOFF = 0.85
_ENFORCED = [k.name for k in KEYWORDS if k.status == _E]


def is_annotation(keyword: str) -> bool:
    """Whether a registered or extension keyword has no effect on validity."""
    return keyword in ANNOTATIONS or keyword.startswith(EXTENSION_PREFIXES)


def keyword_problem(keyword: str) -> str | None:
    """Why a keyword outside IMPLEMENTED fails loudly, or None when it is an annotation.

    Returns:
        a reason for known keywords that change validity but are not enforced, and for probable
        misspellings of enforced keywords; None for every other keyword (annotations by the spec).
    """
    if keyword in IMPLEMENTED or is_annotation(keyword):
        return None
    if keyword in UNSUPPORTED:
        return UNSUPPORTED[keyword]
    close = [k for k in _ENFORCED if k.lower() == keyword.lower()]
    if not close and keyword.isalpha():  # `@type` (JSON-LD) and `//pattern` (commented out) are deliberate
        close = difflib.get_close_matches(keyword, _ENFORCED, n=1, cutoff=MISSPELLING_CUTOFF)
    if close:
        return f"is not a JSON Schema keyword; did you mean {close[0]!r}?"
    return None


def keyword_matrix_markdown() -> str:
    """The published keyword matrix, generated from the registry (and the format list).

    Returns:
        Markdown text: one table of keywords with their status, the types they apply to and how they
        are enforced; the refused keywords; the asserted formats.
    """
    from grammars.frontends.json_schema.formats import DESCRIPTIVE_FORMATS, FORMATS, NUMERIC_FORMATS

    lines = [
        "# JSON Schema keyword matrix",
        "",
        "Generated by `grammars.frontends.json_schema.keyword_matrix_markdown()`; do not edit by hand.",
        "",
        "Refused keywords, and unknown keywords that look like a misspelling of an enforced one",
        "(`maxLenght`, `enums`, `Type`), raise `UnsupportedSchemaError` naming the keyword and its",
        "JSON pointer (a warning under `lenient=True`). Other unknown keywords belong to no JSON Schema",
        "vocabulary and are annotations, as the specification says (`x-*`, `_*`, vendor keywords).",
        "",
        'Every object is written with distinct keys, compared as decoded strings (`"a"` and `"\\u0061"` are',
        "one key), whether declared, matched by `patternProperties` or additional; additional keys keep",
        "any order. Masks never allow a token that repeats a key or leads to a key prefix that only seen",
        "keys complete, nor a comma when no fresh key is left (`grammars.core.distinct_keys`). The same",
        "holds where a schema's JSON is embedded: tool-call arguments and an answer after reasoning",
        "(`grammars.compose`); the free text around them is not read as JSON.",
        "",
        "| keyword | status | applies to | how |",
        "|---|---|---|---|",
    ]
    for keyword in sorted(KEYWORDS, key=lambda k: ({_E: 0, _R: 1, _A: 2}[k.status], k.name.lstrip("$").lower())):
        lines.append(f"| `{keyword.name}` | {keyword.status} | {keyword.applies_to} | {keyword.note} |")
    lines += ["", "## Refused", "", "| keyword | why |", "|---|---|"]
    lines += [f"| `{name}` | {why} |" for name, why in sorted(UNSUPPORTED.items())]
    lines += ["", "## Formats asserted", "", ", ".join(f"`{name}`" for name in sorted(FORMATS)), ""]
    lines += [
        "Integer formats, asserted as ranges on numbers (no constraint on strings): "
        + ", ".join(f"`{name}`" for name in NUMERIC_FORMATS)
        + ".",
        "",
    ]
    lines += [
        "Descriptive OpenAPI formats, which constrain nothing in the JSON text: "
        + ", ".join(f"`{name}`" for name in sorted(DESCRIPTIVE_FORMATS))
        + ". Any other format is an error.",
        "",
    ]
    return "\n".join(lines)
