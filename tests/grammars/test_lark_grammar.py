"""The Lark front end: Lark's syntax to the grammar IR, with errors located in the grammar text."""

import random

import pytest

from grammars.compiler import compile_grammar
from grammars.core import ir
from grammars.errors import (
    ConstraintLimitError,
    EmptyLanguageError,
    GrammarError,
    GrammarSyntaxError,
    LarkPriorityWarning,
    StencilError,
)
from grammars.frontends.lark.grammar import lark_grammar
from grammars.library import LIBRARY_NAMES, library_grammar


def language(text: str, **options):
    return compile_grammar(lark_grammar(text, **options))


# ----------------------------------------------------------------------------------------------
# Structure of the IR
# ----------------------------------------------------------------------------------------------


def test_repetitions_stay_ebnf_without_helper_rules():
    grammar = lark_grammar('start: "a"+ "b"* "c"? ["d"] "e"~3 "f"~2..4\n')
    assert set(grammar.rules) == {"start"}
    items = grammar.rules["start"].items
    assert [(r.min, r.max) for r in items] == [(1, None), (0, None), (0, 1), (0, 1), (3, 3), (2, 4)]


def test_rules_keep_their_names_and_only_reached_rules_are_translated():
    grammar = lark_grammar("start: item+\nitem: NAME\nunused: /(?=x)/\nNAME: /[a-z]+/\n")
    assert set(grammar.rules) == {"start", "item"}
    assert grammar.rules["item"] == ir.Lexeme(grammar.rules["item"].term, "NAME")


def test_a_terminal_built_from_terminals_is_one_lexeme():
    grammar = lark_grammar('start: NUMBER\nNUMBER: DIGIT+ ("." DIGIT+)?\nDIGIT: "0".."9"\n')
    assert isinstance(grammar.rules["start"], ir.Lexeme)
    constraint = compile_grammar(grammar)
    assert constraint.accepts("12.5") and not constraint.accepts("12.") and not constraint.accepts("1 2")


def test_the_start_argument_picks_the_rule():
    grammar = lark_grammar('start: "a"\nother: "b"\n', start="other")
    assert grammar.start == "other"
    assert compile_grammar(grammar).accepts("b")


# ----------------------------------------------------------------------------------------------
# Languages
# ----------------------------------------------------------------------------------------------

LANGUAGES = [
    # tree shaping (?rule, _rule, !rule, aliases) does not change the language
    (
        '?start: _pair | single -> one\n_pair: "(" item "," item ")"\nsingle: item\n!item: "x" | "y"\n',
        ["(x,y)", "x"],
        ["(x)", "xy", ""],
    ),
    # templates, expanded per argument list
    (
        'start: _list{ITEM, ","} ";" _list{"n", "-"}\n_list{x, sep}: x (sep x)*\nITEM: /[0-9]+/\n',
        ["1,22;n-n", "7;n"],
        ["1,;n", "1;"],
    ),
    # case-insensitive strings follow Python's re.IGNORECASE (long s folds to s)
    ('start: "select"i\n', ["select", "SeLeCt", "\u017felect"], ["selec", "selectt"]),
    # regex flags: i, s (dot matches newline), x (verbose), m
    ("start: /ab+c/i /a.b/s /a b  c/x /d/m\n", ["ABBCa\nbabcd", "abca-babcd"], ["abca\nb ab cd", "abca-babc"]),
    # ranges and Unicode literals
    (
        'start: "\u03b1".."\u03c9" "h\u00e9llo" /[\u4e00-\u9fff]+/\n',
        ["\u03b2h\u00e9llo\u4e2d\u6587"],
        ["ah\u00e9llo\u4e2d"],
    ),
    # several %ignore, inline ones too
    ('start: "a" "b"\n%ignore " "\n%ignore /#[^\\n]*\\n/\n', ["a b", "a #c\n b", "ab"], ["a\tb"]),
    # the empty literal is the empty sequence (an llguidance extension; Lark refuses it)
    ('start: "a" ("" | "b") ""\n', ["a", "ab"], ["b"]),
    # direct and indirect left recursion through ?rules
    (
        '?start: sum\n?sum: product | sum "+" product\n?product: atom | product "*" atom\n?atom: /[0-9]/ | "(" sum ")"\n',
        ["1+2*3", "(1+2)*3", "1"],
        ["1+", "+1", "(1"],
    ),
    ('start: a\na: b "x" | "y"\nb: a "z" | "w"\n', ["y", "wx", "yzx", "yzxzx"], ["x", "yz", "wxz"]),
    # priorities are tree-shaping for rules
    ('start: a | b\na.2: "x"\nb: "x" "y"\n', ["x", "xy"], ["y"]),
]


@pytest.mark.parametrize("text, accepted, rejected", LANGUAGES)
def test_languages(text, accepted, rejected):
    constraint = language(text)
    assert [s for s in accepted if not constraint.accepts(s)] == []
    assert [s for s in rejected if constraint.accepts(s)] == []


def test_common_imports_aliases_and_multi_imports():
    text = 'start: NUMBER (_SEP INT)*\n%import common.SIGNED_NUMBER -> NUMBER\n%import common (INT, WS_INLINE)\n_SEP: ","\n%ignore WS_INLINE\n'
    constraint = language(text)
    assert constraint.accepts("-1.5e3, 2 ,3") and not constraint.accepts("1,-2")


def test_relative_imports_resolve_against_import_paths(tmp_path):
    (tmp_path / "pieces").mkdir()
    (tmp_path / "pieces" / "words.lark").write_text('word: LETTER+\nLETTER: "a".."z"\n%import .more.DOT\n')
    (tmp_path / "pieces" / "more.lark").write_text('DOT: "."\n')
    (tmp_path / "top.lark").write_text("%import .pieces.words.word\n")
    text = "start: word (_DOT word)*\n%import .pieces.words.word\n%import .pieces.more.DOT -> _DOT\n"
    constraint = language(text, import_paths=[str(tmp_path)])
    assert constraint.accepts("ab.c") and not constraint.accepts("ab..c")


def test_override_and_extend():
    text = '%import common.INT\nstart: item+\nitem: "a"\n%override item: "b"\n%extend item: INT\n'
    constraint = language(text)
    assert constraint.accepts("b12b") and not constraint.accepts("a")


@pytest.mark.parametrize("name", LIBRARY_NAMES)
def test_library_grammars_give_no_priority_warning(name, recwarn):
    lark_grammar(library_grammar(name))
    assert [w for w in recwarn if issubclass(w.category, LarkPriorityWarning)] == []


def test_an_overlapping_priority_is_reported():
    with pytest.warns(LarkPriorityWarning, match="KEYWORD has priority 2.*NAME"):
        lark_grammar('start: (KEYWORD | NAME)+\nKEYWORD.2: "if"\nNAME: /[a-z]+/\n%ignore " "\n')


# ----------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------


def located(error: GrammarSyntaxError) -> tuple[int, int]:
    return error.line, error.column


def test_syntax_error_position():
    with pytest.raises(GrammarSyntaxError) as caught:
        lark_grammar('start: a\na: "x" )\n')
    assert located(caught.value) == (2, 8)
    assert "^" in caught.value.context()


def test_unexpected_character_position():
    with pytest.raises(GrammarSyntaxError, match="unexpected character '\\$'") as caught:
        lark_grammar('start: "a"\nb: "a" $ "b"\n')
    assert located(caught.value) == (2, 8)


def test_declared_terminal_names_the_declare_line():
    text = 'start: "x" _INDENT "y" _DEDENT\n\n%declare _INDENT _DEDENT\n'
    with pytest.raises(GrammarSyntaxError, match="_INDENT is %declare'd.*cannot be enforced") as caught:
        lark_grammar(text)
    assert caught.value.line == 3


def test_unused_declared_terminal_is_harmless():
    assert language('start: "x"\nother: _INDENT\n%declare _INDENT\n').accepts("x")


@pytest.mark.parametrize(
    "definition, reason",
    [
        ("/a(?=b)/", "lookahead at the end of a terminal reads past it"),
        ("/(?<=a)b/", "lookbehind at the start of a terminal"),
        ("/(a)\\1/", "backreference"),
        ("/a(/", r"in regex /a\(/: missing \), unterminated subpattern"),
        ('"ab".."z"', "range needs single characters"),
        ('"a"~3..2', "bad repetition range 3..2"),
        ("/^a/m", "multiline anchors"),
    ],
)
def test_unsupported_or_bad_terminals_name_their_line(definition, reason):
    with pytest.raises(GrammarSyntaxError, match=reason) as caught:
        lark_grammar(f'start: "x" T\n\nT: {definition}\n')
    assert caught.value.line == 3


@pytest.mark.parametrize(
    "regex, reason, documented",
    [
        (r"(a)\1", "backreferences are not supported", "a backreference"),
        (r"(a)(?(1)b|c)", "conditional groups are not supported", "a conditional group"),
        (r"(?>ab)", "atomic groups are not supported", "an atomic group"),
        (r"a*+", "possessive quantifiers are not supported", "a possessive quantifier"),
        (r"a(?=b(?=c))bc", "lookaround containing a lookaround", "a lookaround containing a lookaround"),
        (r"a\bb", r"word boundaries \(\\b\)", "`\\b` outside a lookahead"),
        (r"a(?!\.\b)\W+", r"\\b in a lookahead is supported only after word", "`\\b` in a lookahead after"),
        (r"(?m)a$", "multiline anchors", "`^` / `$` under the `m` flag"),
    ],
)
def test_docs_list_every_refused_construct(regex, reason, documented):
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[2] / "docs" / "lark.md").read_text(encoding="utf-8")
    with pytest.raises(GrammarSyntaxError, match=reason):
        lark_grammar(f"start: T\nT: /{regex}/\n")
    assert documented in docs


def test_undefined_rule_is_located_at_its_use():
    with pytest.raises(GrammarSyntaxError, match="'missing' used but not defined") as caught:
        lark_grammar('start: item\nitem: "a" missing\n')
    assert located(caught.value) == (2, 11)


def test_unknown_start_rule_lists_the_rules():
    with pytest.raises(GrammarError, match="start rule 'begin' is not defined.*item, start"):
        lark_grammar('start: item\nitem: "a"\n', start="begin")


def test_start_rule_deriving_nothing():
    with pytest.raises(EmptyLanguageError):
        lark_grammar('start: loop\nloop: "x" loop\n')


def test_missing_import_names_the_import_line(tmp_path):
    with pytest.raises(GrammarSyntaxError, match="cannot find the grammar 'nowhere'") as caught:
        lark_grammar("start: x\n%import .nowhere.x\n", import_paths=[str(tmp_path)])
    assert caught.value.line == 2


def test_errors_in_imported_files_name_the_file(tmp_path):
    (tmp_path / "broken.lark").write_text('THING: "a" )\n')
    with pytest.raises(GrammarSyntaxError, match="broken.lark") as caught:
        lark_grammar("start: THING\n%import .broken.THING\n", import_paths=[str(tmp_path)])
    assert caught.value.line == 1


def test_self_feeding_template_is_a_limit_error():
    with pytest.raises(ConstraintLimitError, match="template"):
        lark_grammar('start: t{"a"}\nt{x}: x | t{p{x}}\np{y}: y y\n')


def test_no_lark_exception_escapes_on_broken_text():
    rng = random.Random(3)
    text = library_grammar("sql_select")
    for _ in range(60):
        cut = rng.randrange(len(text))
        broken = (
            text[:cut]
            + rng.choice(["", ")", "|", "->", "%", '"', "/", "~", ":", "\n"])
            + text[cut + rng.randrange(4) :]
        )
        try:
            lark_grammar(broken)
        except StencilError:
            pass
