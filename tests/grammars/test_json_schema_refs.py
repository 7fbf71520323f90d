"""Schema locations: JSON pointers, base URIs, `$id`/anchors, dialects, remote documents."""

import pytest

from grammars.errors import SchemaError
from grammars.frontends.json_schema.refs import (
    ROOT_URI,
    Dialect,
    Loc,
    SchemaRegistry,
    escape_token,
    join_uri,
    pointer_tokens,
)


def test_pointers_escape_and_unescape():
    assert escape_token("a/b~c") == "a~1b~0c"
    assert pointer_tokens("/a~1b~0c/0") == ["a/b~c", "0"]
    assert Loc("d", "").child("properties", "x/y").pointer == "/properties/x~1y"


def test_uri_joining_handles_fragments_and_urns():
    assert join_uri("urn:uuid:1234", "#/a") == "urn:uuid:1234#/a"
    assert join_uri("http://x/a/b.json", "c.json") == "http://x/a/c.json"
    assert join_uri("http://x/a/b.json", "urn:y") == "urn:y"


def test_ids_anchors_and_dialects_are_indexed():
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": "http://x/root.json",
        "definitions": {
            "a": {"$id": "#named", "type": "integer"},
            "b": {"$id": "sub/b.json", "definitions": {"c": {}}},
        },
    }
    registry = SchemaRegistry(schema)
    assert registry.dialect(registry.root) == Dialect.DRAFT7
    assert registry.resolve("#named", registry.root) == Loc(ROOT_URI, "/definitions/a")
    assert registry.resolve("sub/b.json#/definitions/c", registry.root) == Loc(ROOT_URI, "/definitions/b/definitions/c")
    assert registry.base_uri(Loc(ROOT_URI, "/definitions/b/definitions/c")) == "http://x/sub/b.json"


def test_remote_documents_come_only_from_resources():
    registry = SchemaRegistry(
        {"$ref": "http://y/other.json#/$defs/z"}, resources={"http://y/other.json": {"$defs": {"z": True}}}
    )
    assert registry.resolve("http://y/other.json#/$defs/z", registry.root) == Loc("http://y/other.json", "/$defs/z")
    with pytest.raises(SchemaError, match="not fetched"):
        SchemaRegistry({}).resolve("http://y/other.json", Loc(ROOT_URI, ""))


def test_official_meta_schemas_resolve_without_resources():
    registry = SchemaRegistry({})
    loc = registry.resolve("http://json-schema.org/draft-07/schema#", registry.root)
    assert registry.schema_at(loc)["$id"].startswith("http://json-schema.org/draft-07/schema")
