"""The compile caches: one object per specification in memory, grammars on disk per compiler source."""

import pytest

import grammars
from grammars import compiler

SCHEMA = {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]}


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("STENCIL_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(compiler, "_cache", compiler.OrderedDict())
    return tmp_path


def _refuse_to_build(*args, **kwargs):
    raise AssertionError("the grammar was built instead of read from the cache")


def test_the_same_specification_gives_the_same_constraint(cache_dir):
    assert grammars.compile(SCHEMA) is grammars.compile(SCHEMA)
    assert grammars.compile(SCHEMA) is not grammars.compile(SCHEMA, whitespace="compact")


def test_a_new_process_reads_the_grammar_from_disk(cache_dir, monkeypatch):
    grammars.compile(SCHEMA)
    assert len(list(cache_dir.glob("grammars-*/*.pickle"))) == 1
    monkeypatch.setattr(compiler, "_cache", compiler.OrderedDict())  # as in a fresh process
    monkeypatch.setattr(compiler, "_grammar", _refuse_to_build)
    constraint = grammars.compile(SCHEMA)
    assert constraint.accepts('{"id":3}') and not constraint.accepts('{"id":"3"}')


def test_entries_of_another_compiler_version_are_not_read(cache_dir, monkeypatch):
    grammars.compile(SCHEMA)
    monkeypatch.setattr(compiler, "_cache", compiler.OrderedDict())
    monkeypatch.setattr(compiler, "_source_fingerprint", lambda: "another-version")
    monkeypatch.setattr(compiler, "_grammar", _refuse_to_build)
    with pytest.raises(AssertionError, match="built instead of read"):
        grammars.compile(SCHEMA)


def test_an_empty_cache_dir_setting_disables_the_disk_cache(cache_dir, monkeypatch):
    monkeypatch.setenv("STENCIL_CACHE_DIR", "")
    grammars.compile(SCHEMA)
    assert not list(cache_dir.iterdir())
