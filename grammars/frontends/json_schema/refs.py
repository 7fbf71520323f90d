"""Where subschemas live and what `$ref` points at: base URIs, `$id`, anchors, JSON pointers, dialects.

A schema location is a `Loc`: the URI of the document that holds it and an RFC 6901 JSON pointer into
that document. `SchemaRegistry` indexes every document it is given (the root, then remote documents
on first reference) along the keywords that hold subschemas, recording for each subschema its base
URI (changed by `$id`, or `id` in draft 4), its dialect (`$schema`), embedded resources and anchors
(`$anchor`, `$dynamicAnchor`, and draft 6/7 `$id: "#name"`). `resolve` turns a `$ref` into a `Loc`.

Remote documents are never fetched: they come from the `resources` mapping (URI -> schema) the caller
passes, else the reference is a `SchemaError`.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urldefrag, urljoin

from grammars.errors import SchemaError

#: The base URI of a root schema without `$id`.
ROOT_URI = "https://stencil.invalid/schema.json"


class Dialect(enum.IntEnum):
    """JSON Schema drafts whose semantics differ for the keywords we enforce (ordered by age)."""

    DRAFT4 = 4
    DRAFT6 = 6
    DRAFT7 = 7
    DRAFT2019 = 2019
    DRAFT2020 = 2020


_DIALECTS = {
    "http://json-schema.org/draft-04/schema": Dialect.DRAFT4,
    "http://json-schema.org/draft-06/schema": Dialect.DRAFT6,
    "http://json-schema.org/draft-07/schema": Dialect.DRAFT7,
    "https://json-schema.org/draft/2019-09/schema": Dialect.DRAFT2019,
    "https://json-schema.org/draft/2020-12/schema": Dialect.DRAFT2020,
}

#: Keywords whose value is one subschema / a list of subschemas / a map of name -> subschema.
SCHEMA_KEYWORDS = frozenset(
    {
        "additionalItems",
        "additionalProperties",
        "contains",
        "propertyNames",
        "not",
        "if",
        "then",
        "else",
        "items",
        "unevaluatedItems",
        "unevaluatedProperties",
        "contentSchema",
    }
)
SCHEMA_LIST_KEYWORDS = frozenset({"allOf", "anyOf", "oneOf", "prefixItems", "items"})
SCHEMA_MAP_KEYWORDS = frozenset(
    {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas", "dependencies"}
)

#: Keywords that only hold named schemas for `$ref` to use.
_DEFINITION_KEYWORDS = ("$defs", "definitions")
_MISSING = object()
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")


@dataclass(frozen=True, order=True)
class Loc:
    """A subschema: the document it is in and its JSON pointer there."""

    doc: str
    pointer: str

    def child(self, *tokens: str | int) -> Loc:
        """The location `tokens` below this one (tokens are raw keys or indices, escaped here)."""
        return Loc(self.doc, self.pointer + "".join("/" + escape_token(str(t)) for t in tokens))


def escape_token(token: str) -> str:
    """RFC 6901 escaping of one pointer token."""
    return token.replace("~", "~0").replace("/", "~1")


def pointer_tokens(pointer: str) -> list[str]:
    """The unescaped tokens of a JSON pointer ("" is the whole document)."""
    if not pointer:
        return []
    if not pointer.startswith("/"):
        raise ValueError(f"not a JSON pointer: {pointer!r}")
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]


def join_uri(base: str, ref: str) -> str:
    """`ref` resolved against `base` (RFC 3986), also for non-hierarchical bases such as URNs."""
    if _SCHEME.match(ref):
        return ref
    if ref.startswith("#") or not ref:
        return urldefrag(base).url + ref
    return urljoin(base, ref)


def dialect_of(schema_uri: object) -> Dialect | None:
    """The dialect a `$schema` value names, None if unknown."""
    if not isinstance(schema_uri, str):
        return None
    return _DIALECTS.get(schema_uri.rstrip("#"))


class SchemaRegistry:
    """The documents of one compilation and the index that resolves references among them.

    Args:
        root: the root schema.
        resources: remote documents by absolute URI (what a `$ref` to another document may use).
        default_dialect: the dialect of documents without `$schema`.
    Raises:
        SchemaError: the root is not a schema (object or boolean).
    """

    def __init__(
        self,
        root: object,
        *,
        resources: Mapping[str, object] | None = None,
        default_dialect: Dialect = Dialect.DRAFT2020,
    ) -> None:
        if not isinstance(root, (dict, bool)):
            raise SchemaError(f"a schema must be an object or a boolean, not {type(root).__name__}")
        self._resources = resources if resources is not None else {}
        self._default_dialect = default_dialect
        self._docs: dict[str, object] = {}
        self._base: dict[Loc, str] = {}
        self._dialect: dict[Loc, Dialect] = {}
        self._resource_locs: dict[str, Loc] = {}
        self._anchors: dict[tuple[str, str], Loc] = {}
        self._schema_at: dict[Loc, object] = {}
        self.root = self._add_document(ROOT_URI, root, default_dialect)

    # ------------------------------------------------------------------------------------------
    def schema_at(self, loc: Loc) -> object:
        """The raw subschema at `loc`.

        Raises:
            SchemaError: the pointer does not lead anywhere in the document.
        """
        found = self._schema_at.get(loc, _MISSING)
        if found is not _MISSING:
            return found
        # Walk down from the nearest location already looked up (schemas nest thousands deep).
        pointer = loc.pointer
        suffix: list[str] = []
        while pointer and Loc(loc.doc, pointer) not in self._schema_at:
            pointer, _, token = pointer.rpartition("/")
            suffix.append(token)
        node = self._schema_at.get(Loc(loc.doc, pointer), self._docs[loc.doc]) if pointer else self._docs[loc.doc]
        for token in reversed(suffix):
            token = token.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and token in node:
                node = node[token]
            elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
                node = node[int(token)]
            else:
                raise SchemaError(f"JSON pointer {loc.pointer!r} does not exist in {loc.doc}", loc.pointer)
            pointer += "/" + token.replace("~", "~0").replace("/", "~1")
            self._schema_at[Loc(loc.doc, pointer)] = node
        return node

    def dialect(self, loc: Loc) -> Dialect:
        """The dialect in force at `loc`."""
        return self._dialect.get(loc) or self._dialect[self._indexed_ancestor(loc)]

    def base_uri(self, loc: Loc) -> str:
        """The base URI relative references at `loc` resolve against."""
        return self._base.get(loc) or self._base[self._indexed_ancestor(loc)]

    def resolve(self, ref: object, at: Loc, keyword: str = "$ref") -> Loc:
        """The location a reference found at `at` points to.

        Raises:
            SchemaError: a reference that is not a string, names an unknown document or anchor, or a
                pointer that leads nowhere.
        """
        pointer = at.child(keyword).pointer
        if not isinstance(ref, str):
            raise SchemaError(f"{keyword} must be a string, not {type(ref).__name__}", pointer)
        target = join_uri(self.base_uri(at), ref)
        uri, fragment = urldefrag(target)
        resource = self._resource(uri, pointer, self.dialect(at))
        fragment = unquote(fragment)
        if not fragment:
            return resource
        if fragment.startswith("/"):
            loc = Loc(resource.doc, resource.pointer + fragment)
            try:
                self.schema_at(loc)
            except SchemaError:
                # Many draft-4 schemas write `#/definitions/...` from the document root even below
                # an `id` that changed the base; resolve those as their authors (and validators that
                # ignore such ids) do, and fail only when the root has no such pointer either.
                if not resource.pointer:
                    raise
                loc = Loc(resource.doc, fragment)
                self.schema_at(loc)
            return loc
        anchored = self._anchors.get((uri, fragment))
        if anchored is None:
            raise SchemaError(f"{keyword} {ref!r}: no anchor {fragment!r} in {uri}", pointer)
        return anchored

    # ------------------------------------------------------------------------------------------
    def _resource(self, uri: str, pointer: str, dialect: Dialect) -> Loc:
        """The root of the resource `uri`, loading a remote document (dialect inherited from the
        referrer unless it says `$schema`) from `resources` or the official meta-schemas."""
        loc = self._resource_locs.get(uri)
        if loc is not None:
            return loc
        document = self._resources.get(uri)
        if document is None:
            document = _meta_schema(uri)
        if document is None:
            raise SchemaError(
                f"$ref to {uri!r}: remote documents are not fetched; pass the document as "
                f"`resources={{{uri!r}: ...}}` to grammars.compile or grammars.Schema",
                pointer,
            )
        if not isinstance(document, (dict, bool)):
            raise SchemaError(f"resource {uri!r} is not a schema", pointer)
        return self._add_document(uri, document, dialect)

    def _add_document(self, uri: str, document: object, dialect: Dialect) -> Loc:
        self._docs[uri] = document
        root = Loc(uri, "")
        self._resource_locs.setdefault(uri, root)
        self._index(root, document, uri, dialect)
        return root

    def _indexed_ancestor(self, loc: Loc) -> Loc:
        tokens = loc.pointer.split("/")
        while tokens:
            tokens.pop()
            candidate = Loc(loc.doc, "/".join(tokens))
            if candidate in self._base:
                return candidate
        return Loc(loc.doc, "")

    def _index(self, start: Loc, schema: object, base: str, dialect: Dialect) -> None:
        """Record base URIs, dialects, resources and anchors of every subschema (iteratively: schemas
        may nest thousands deep)."""
        stack = [(start, schema, base, dialect)]
        while stack:
            loc, node, base, dialect = stack.pop()
            if isinstance(node, dict):
                dialect = dialect_of(node.get("$schema")) or dialect
                base = self._apply_id(loc, node, base, dialect)
                for keyword in _DEFINITION_KEYWORDS:
                    if keyword in node and not isinstance(node[keyword], dict):
                        # Never compiled but through $ref, so no other check would see it.
                        raise SchemaError(f"{keyword} must be an object of schemas", loc.child(keyword).pointer)
                for name, child in self._subschemas(node):
                    stack.append((loc.child(*name), child, base, dialect))
            self._base.setdefault(loc, base)
            self._dialect.setdefault(loc, dialect)
            self._schema_at.setdefault(loc, node)  # so that `schema_at` walks no pointer it indexed

    def _apply_id(self, loc: Loc, node: dict, base: str, dialect: Dialect) -> str:
        id_keyword = "id" if dialect == Dialect.DRAFT4 else "$id"
        ignores_siblings = dialect <= Dialect.DRAFT7 and "$ref" in node
        identifier = node.get(id_keyword)
        if isinstance(identifier, str) and not ignores_siblings:
            uri, fragment = urldefrag(join_uri(base, identifier))
            if identifier.startswith("#") and dialect <= Dialect.DRAFT7:
                self._anchors.setdefault((uri, fragment), loc)
            else:
                base = uri
                self._resource_locs.setdefault(uri, loc)
                if fragment and dialect <= Dialect.DRAFT7:
                    self._anchors.setdefault((uri, fragment), loc)
        for anchor_keyword in ("$anchor", "$dynamicAnchor"):
            anchor = node.get(anchor_keyword)
            if isinstance(anchor, str):
                self._anchors.setdefault((urldefrag(base).url, anchor), loc)
        return base

    @staticmethod
    def _subschemas(node: dict):
        for keyword, value in node.items():
            if keyword in SCHEMA_KEYWORDS and isinstance(value, (dict, bool)):
                yield (keyword,), value
            elif keyword in SCHEMA_LIST_KEYWORDS and isinstance(value, list):
                for index, item in enumerate(value):
                    yield (keyword, index), item
            elif keyword in SCHEMA_MAP_KEYWORDS and isinstance(value, dict):
                for name, item in value.items():
                    if isinstance(item, (dict, bool)):
                        yield (keyword, name), item


def _meta_schema(uri: str) -> object | None:
    """An official meta-schema (shipped with the `jsonschema` dependency), None for any other URI."""
    try:
        import jsonschema_specifications
    except ImportError:
        return None
    for candidate in (uri, uri + "#"):
        try:
            return jsonschema_specifications.REGISTRY.contents(candidate)
        except LookupError:
            continue
    return None
