"""The compile cache: one object per specification, in memory only; keys built without recursion."""

import os
import pickle
from collections import OrderedDict

import pytest

import grammars
from grammars import compiler
from grammars.errors import ConstraintLimitError

SCHEMA = {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]}
QUERIES = grammars.Choice(["SELECT 1", "SELECT 2"])


@pytest.fixture
def fresh_cache(monkeypatch):
    monkeypatch.setattr(compiler, "_cache", OrderedDict())


@pytest.fixture
def cache_dirs(tmp_path, monkeypatch, fresh_cache):
    """Every place a disk cache could use (the old `$STENCIL_CACHE_DIR`, and the home directory)."""
    monkeypatch.setenv("STENCIL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home" / ".cache"))
    return tmp_path


class _RunsCode:
    """A pickle that makes a directory when loaded: what an attacker's cache entry would do."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _planted_entries(tmp_path):
    wider = grammars.compile(grammars.Choice(["SELECT 1", "SELECT 2", "DROP TABLE users"]), cache=False).grammar
    return {
        "runs_code": pickle.dumps(_RunsCode(str(tmp_path / "code-ran"))),
        "wider_language": pickle.dumps(wider),
        "garbage": b"\x80\x05X\x02\x00\x00\x00\xff\xfe.",  # a str of invalid UTF-8: UnicodeDecodeError
    }


def test_the_same_specification_gives_the_same_constraint(fresh_cache):
    assert grammars.compile(SCHEMA) is grammars.compile(SCHEMA)
    assert grammars.compile(SCHEMA) is not grammars.compile(SCHEMA, whitespace="compact")
    assert grammars.compile(SCHEMA) is not grammars.compile(SCHEMA, cache=False)


def test_compiling_writes_no_file(cache_dirs):
    grammars.compile(SCHEMA)
    grammars.compile(QUERIES)
    assert not [path for path in cache_dirs.rglob("*") if path.is_file()]


@pytest.mark.parametrize("entry", ["runs_code", "wider_language", "garbage"])
def test_a_file_planted_where_compile_wrote_is_never_read(cache_dirs, monkeypatch, entry):
    grammars.compile(QUERIES)
    for path in cache_dirs.rglob("*"):  # the attacker overwrites whatever compiling left behind
        if path.is_file():
            path.write_bytes(_planted_entries(cache_dirs)[entry])
    monkeypatch.setattr(compiler, "_cache", OrderedDict())  # as in a fresh process
    constraint = grammars.compile(QUERIES)
    assert constraint.accepts("SELECT 1") and not constraint.accepts("DROP TABLE users")
    assert not (cache_dirs / "code-ran").exists()


def _nested_objects(depth: int) -> dict:
    schema: dict = {"type": "integer"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


@pytest.mark.parametrize("cache", [True, False])
def test_a_schema_nested_500_deep_compiles(fresh_cache, cache):
    constraint = grammars.compile(_nested_objects(500), cache=cache)
    assert constraint.accepts('{"a":' * 500 + "7" + "}" * 500)
    assert not constraint.accepts('{"a":' * 500 + '"7"' + "}" * 500)
    assert "schema" in repr(constraint)


@pytest.mark.parametrize("cache", [True, False])
def test_absurd_nesting_is_a_constraint_limit_error(fresh_cache, cache):
    with pytest.raises(ConstraintLimitError, match=str(compiler.MAX_SPEC_NESTING)):
        grammars.compile(_nested_objects(compiler.MAX_SPEC_NESTING), cache=cache)


def test_a_schema_that_contains_itself_is_a_constraint_limit_error(fresh_cache):
    schema: dict = {"type": "object", "properties": {}}
    schema["properties"]["self"] = schema
    with pytest.raises(ConstraintLimitError, match="contains itself"):
        grammars.compile(schema)


@pytest.mark.parametrize(
    ("first", "second", "text_of_second"),
    [
        ({"const": 1}, {"const": True}, "true"),
        (
            {"type": "object", "properties": {"a": {"const": 1}, "b": {"const": 2}}, "required": ["a", "b"]},
            {"type": "object", "properties": {"b": {"const": 2}, "a": {"const": 1}}, "required": ["a", "b"]},
            '{"b":2,"a":1}',
        ),
    ],
    ids=["integer_and_boolean", "property_order"],
)
def test_specifications_that_compile_differently_never_share_an_entry(fresh_cache, first, second, text_of_second):
    grammars.compile(first)
    assert grammars.compile(second).accepts(text_of_second)


def test_a_specification_marshal_cannot_write_is_compiled_uncached(fresh_cache):
    schema = OrderedDict(type="integer")
    assert grammars.compile(schema).accepts("3") and not grammars.compile(schema).accepts('"3"')


REMOTE = "https://example.com/id.json"


def test_resources_are_part_of_the_key(fresh_cache):
    schema = {"$ref": REMOTE}
    integer = grammars.compile(schema, resources={REMOTE: {"type": "integer"}})
    string = grammars.compile(schema, resources={REMOTE: {"type": "string"}})
    assert integer.accepts("1") and not integer.accepts('"1"')
    assert string.accepts('"1"') and not string.accepts("1")
    assert grammars.compile(schema, resources={REMOTE: {"type": "integer"}}) is integer
    assert grammars.compile(grammars.Schema(schema, resources={REMOTE: {"type": "integer"}})) is integer


def test_lark_import_paths_are_part_of_the_key(fresh_cache, tmp_path):
    for name, word in (("a", "yes"), ("b", "no")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "words.lark").write_text(f'WORD: "{word}"\n')
    text = "start: WORD\n%import .words.WORD\n"
    first = grammars.compile(grammars.Lark(text, import_paths=[str(tmp_path / "a")]))
    second = grammars.compile(grammars.Lark(text, import_paths=[str(tmp_path / "b")]))
    assert first.accepts("yes") and not first.accepts("no")
    assert second.accepts("no") and not second.accepts("yes")
    assert grammars.compile(grammars.Lark(text, import_paths=[tmp_path / "a"])) is first


def test_relative_import_paths_are_keyed_by_the_directory_they_name(fresh_cache, tmp_path, monkeypatch):
    for name, word in (("a", "yes"), ("b", "no")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "words.lark").write_text(f'WORD: "{word}"\n')
    spec = grammars.Lark("start: WORD\n%import .words.WORD\n", import_paths=["."])
    monkeypatch.chdir(tmp_path / "a")
    assert grammars.compile(spec).accepts("yes")
    monkeypatch.chdir(tmp_path / "b")
    assert grammars.compile(spec).accepts("no")


@pytest.mark.parametrize(
    "spec, shown",
    [
        ({"type": "string"}, "schema {'type': 'string'}"),
        (grammars.Choice(["yes", "no"]), "choice ['yes', 'no']"),
        (True, "schema True"),
    ],
)
def test_a_small_specification_is_described_by_its_repr(fresh_cache, spec, shown):
    assert repr(grammars.compile(spec, cache=False)) == f"Constraint({shown})"


def test_the_description_of_a_huge_or_cyclic_schema_is_its_bounded_start():
    wide = {"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(20_000)}}
    deep = _nested_objects(5_000)
    cyclic: dict = {"type": "object"}
    cyclic["properties"] = {"self": cyclic}
    for schema in (wide, deep, cyclic):
        text = compiler._summary("schema", schema)
        assert text.startswith("schema {'type': 'object', 'properties': {'")
        assert text.endswith("...") and len(text) == len("schema ...") + compiler.MAX_SUMMARY_CHARS
    assert "{'p0': {'type': 'integer'}," in compiler._summary("schema", wide)
