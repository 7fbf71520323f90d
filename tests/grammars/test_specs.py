"""Specifications and their compile options: `Schema`, `Lark(import_paths=...)`, `compile(resources=...)`,
and error hints that name only parameters that exist."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

import grammars
from grammars.errors import GrammarError, GrammarSyntaxError, SchemaError, UnsupportedSchemaError

REMOTE = "https://example.com/item.json"
REFERRING = {"type": "object", "properties": {"item": {"$ref": REMOTE}}, "required": ["item"]}
RESOURCES = {REMOTE: {"type": "integer"}}
MISSPELLED = {"type": "string", "maxLenght": 3}
WORDS = 'WORD: "yes" | "no"\n'
IMPORTING = "start: WORD\n%import .words.WORD\n"

#: Every public callable whose parameters a hint in an error message may name.
HINTED_CALLABLES = (
    grammars.compile,
    grammars.Schema,
    grammars.Lark,
    grammars.Regex,
    grammars.Choice,
    grammars.Vocabulary,
    grammars.Vocabulary.from_tokenizer,
)


@pytest.fixture
def words_dir(tmp_path: Path) -> Path:
    (tmp_path / "words.lark").write_text(WORDS)
    return tmp_path


def test_a_remote_ref_names_resources_and_resolves_through_them() -> None:
    with pytest.raises(SchemaError, match=r"`resources=\{'https://example.com/item.json': \.\.\.\}`"):
        grammars.compile(REFERRING)
    for constraint in (
        grammars.compile(REFERRING, resources=RESOURCES),
        grammars.compile(grammars.Schema(REFERRING, resources=RESOURCES)),
    ):
        assert constraint.accepts('{"item": 3}') and not constraint.accepts('{"item": "3"}')


def test_a_schema_spec_is_compile_with_its_options() -> None:
    spec = grammars.Schema({"type": "array", "items": {"type": "integer"}}, whitespace="compact")
    assert grammars.compile(spec) is grammars.compile(spec.schema, whitespace="compact")
    assert grammars.compile(spec).accepts("[1,2]") and not grammars.compile(spec).accepts("[1, 2]")
    indented = grammars.compile(grammars.Schema({"type": "array"}, indent=2))
    assert indented.accepts("[\n  1\n]") and not indented.accepts("[1]")


def test_a_misspelled_keyword_warns_under_a_lenient_schema() -> None:
    with pytest.raises(UnsupportedSchemaError, match="maxLenght"):
        grammars.compile(grammars.Schema(MISSPELLED))
    with pytest.warns(grammars.UnsupportedSchemaWarning, match="did you mean 'maxLength'"):
        constraint = grammars.compile(grammars.Schema(MISSPELLED, lenient=True), cache=False)
    assert constraint.accepts('"longer than three"')


@pytest.mark.parametrize(
    "options", [{"lenient": True}, {"whitespace": "compact"}, {"indent": 2}, {"resources": RESOURCES}]
)
def test_options_given_both_to_a_schema_and_to_compile_are_refused(options: dict) -> None:
    with pytest.raises(GrammarError, match="give lenient, whitespace, indent and resources to Schema"):
        grammars.compile(grammars.Schema(REFERRING, resources=RESOURCES), **options)


@pytest.mark.parametrize(
    "resources", [["https://example.com/item.json"], {1: {"type": "integer"}}], ids=["list", "int_key"]
)
def test_resources_must_map_uris_to_documents(resources: object) -> None:
    with pytest.raises(GrammarError, match="mapping of absolute URI"):
        grammars.compile(REFERRING, resources=resources)  # type: ignore[arg-type]


def test_resources_with_a_grammar_spec_are_refused() -> None:
    with pytest.raises(GrammarError, match="not to a regex specification"):
        grammars.compile(grammars.Regex("[0-9]+"), resources=RESOURCES)


def test_a_schema_spec_is_a_json_schema() -> None:
    with pytest.raises(GrammarError, match="not a list"):
        grammars.Schema([{"type": "integer"}])  # type: ignore[arg-type]
    assert grammars.compile(grammars.Schema(True)).accepts("[1]")


def test_a_missing_lark_import_names_import_paths_and_resolves_through_them(words_dir: Path) -> None:
    with pytest.raises(GrammarSyntaxError, match=r"`import_paths=` of grammars\.Lark"):
        grammars.compile(grammars.Lark(IMPORTING))
    for paths in ([str(words_dir)], (words_dir,)):  # str or os.PathLike
        constraint = grammars.compile(grammars.Lark(IMPORTING, import_paths=paths))
        assert constraint.accepts("yes") and not constraint.accepts("maybe")


def test_lark_import_paths_are_kept_as_a_tuple_of_str(words_dir: Path) -> None:
    spec = grammars.Lark(IMPORTING, import_paths=[words_dir])
    assert spec.import_paths == (str(words_dir),)
    assert hash(spec) == hash(grammars.Lark(IMPORTING, import_paths=(str(words_dir),)))


@pytest.mark.parametrize("paths", ["grammars/", [b"grammars/"], [3]], ids=["one_str", "bytes", "int"])
def test_lark_import_paths_are_directories(paths: object) -> None:
    with pytest.raises(GrammarError, match="import.path"):
        grammars.Lark(IMPORTING, import_paths=paths)  # type: ignore[arg-type]


def _hint_literals() -> list[tuple[str, str]]:
    """(file, text) of every string literal in `grammars` that is not a docstring and holds a hint:
    the word "pass", or a backticked `name=`."""
    root = Path(grammars.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                if re.search(r"\bpass\b|`\w+=", node.value):
                    found.append((path.relative_to(root).as_posix(), node.value))
    return found


def _named_parameters(text: str) -> set[str]:
    """Parameter names a hint mentions: backticked `name=`, and snake_case words after "pass"."""
    names = set(re.findall(r"`(\w+)=", text))
    for after in re.findall(r"\bpass\b(.*)", text):
        names |= set(re.findall(r"\b[a-z]+(?:_[a-z]+)+\b", after))
    return names


def test_every_hint_names_a_parameter_that_exists() -> None:
    parameters = {name for function in HINTED_CALLABLES for name in inspect.signature(function).parameters}
    hints = _hint_literals()
    named = {(path, name) for path, text in hints for name in _named_parameters(text)}
    # The scan finds the hints it is meant to check (else it would pass by finding nothing).
    assert {("frontends/json_schema/refs.py", "resources"), ("frontends/lark/sources.py", "import_paths")} <= named
    assert [(path, name) for path, name in sorted(named) if name not in parameters] == []


@pytest.mark.parametrize("options", [{"lenient": True}, {"whitespace": "compact"}, {"indent": 2}])
def test_schema_options_with_a_regex_lark_or_choice_are_refused_not_ignored(options: dict) -> None:
    for spec in (grammars.Regex("a+"), grammars.Lark('start: "a"'), grammars.Choice(["a"])):
        with pytest.raises(GrammarError, match="apply to JSON Schemas and types"):
            grammars.compile(spec, **options)
