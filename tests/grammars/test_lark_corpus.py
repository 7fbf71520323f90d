"""Real Lark grammars (lark-parser, outlines, llguidance) through the front end, checked against Lark.

1. Every corpus grammar loads, or fails with a typed error naming the construct and its line; the
   outcome of each file is pinned in EXPECTED (a ratchet: a change in either direction fails).
2. The corpus's sample inputs are accepted, and mutated samples (a closing bracket deleted, a
   control character injected) rejected, by us and by Lark's Earley parser alike.
3. Random sentences of each grammar and one-character mutations of them get the same verdict from
   us and from Lark's Earley parser (dynamic lexer), except where our lexer's documented greediness
   (`grammars.core.automaton`: no backtracking into a lexeme) rejects a text Lark splits differently;
   those cases are counted, and any other disagreement fails.
"""

from __future__ import annotations

import random
import re
import warnings
from pathlib import Path

import pytest
from lark import Lark
from lark.exceptions import LarkError

from grammars.compiler import compile_grammar
from grammars.errors import GrammarError, GrammarSyntaxError, LarkPriorityWarning
from grammars.frontends.lark.grammar import lark_grammar
from tests.grammars.lark_sentences import SentenceGenerator, mutations, rejected_by_greedy_lexing
from tests.shared_data import SHARED

CORPUS = SHARED / "corpus" / "lark"
OUTLINES = "outlines/pr-branch-2024-02"
LOOKAHEAD_PAST_END = "lookahead at the end of a terminal reads past it"
NO_START = "start rule 'start' is not defined"

#: Outcome per corpus file: "ok", or the error's class and a part of its reason, and its line.
EXPECTED: dict[str, tuple[str, str, int | None] | str] = {
    "lark-parser/examples/advanced/python2.lark": ("GrammarSyntaxError", "_INDENT is %declare'd", 167),
    "lark-parser/examples/advanced/template_lark.lark": ("GrammarSyntaxError", LOOKAHEAD_PAST_END, 42),
    "lark-parser/examples/composition/csv.lark": "ok",
    "lark-parser/examples/composition/json.lark": "ok",
    "lark-parser/examples/composition/storage.lark": "ok",
    "lark-parser/examples/grammars/verilog.lark": ("GrammarSyntaxError", "lookahead at the end of a group", 126),
    "lark-parser/examples/relative-imports/multiple2.lark": "ok",
    "lark-parser/examples/relative-imports/multiple3.lark": "ok",
    "lark-parser/examples/relative-imports/multiples.lark": "ok",
    "lark-parser/examples/standalone/json.lark": "ok",
    "lark-parser/examples/tests/negative_priority.lark": "ok",
    "lark-parser/examples/tests/no_newline_at_end.lark": "ok",
    "lark-parser/lark/grammars/common.lark": ("GrammarError", NO_START, None),
    "lark-parser/lark/grammars/lark.lark": ("GrammarSyntaxError", LOOKAHEAD_PAST_END, 48),
    "lark-parser/lark/grammars/python.lark": ("GrammarSyntaxError", LOOKAHEAD_PAST_END, 289),
    "lark-parser/lark/grammars/unicode.lark": ("GrammarError", NO_START, None),
    "lark-parser/tests/grammars/ab.lark": "ok",
    "lark-parser/tests/grammars/leading_underscore_grammar.lark": "ok",
    "lark-parser/tests/grammars/templates.lark": ("GrammarError", NO_START, None),
    "lark-parser/tests/grammars/test.lark": ("GrammarError", NO_START, None),
    "lark-parser/tests/grammars/test_relative_import_of_nested_grammar.lark": "ok",
    "lark-parser/tests/grammars/test_relative_import_of_nested_grammar__grammar_to_import.lark": "ok",
    "lark-parser/tests/grammars/test_relative_import_of_nested_grammar__nested_grammar.lark": (
        "GrammarError",
        NO_START,
        None,
    ),
    "lark-parser/tests/grammars/test_unicode.lark": ("GrammarError", NO_START, None),
    "lark-parser/tests/grammars/three_rules_using_same_token.lark": "ok",
    "llguidance/sample_parser/data/lark.lark": "ok",
    "llguidance/sample_parser/data/rfc.lark": "ok",
    "outlines/head/src/outlines/grammars/arithmetic.lark": "ok",
    "outlines/head/src/outlines/grammars/common.lark": ("GrammarError", NO_START, None),
    "outlines/head/src/outlines/grammars/json.lark": "ok",
    f"{OUTLINES}/arithmetic.lark": "ok",
    f"{OUTLINES}/bash.lark": ("GrammarSyntaxError", "Recursion in terminal 'WORD'", 7),
    f"{OUTLINES}/cfg_samples/lark/lark_self_grammar.lark": (
        "GrammarSyntaxError",
        "'escaped_string' used but not defined",
        74,
    ),
    f"{OUTLINES}/common.lark": ("GrammarError", NO_START, None),
    f"{OUTLINES}/csv.lark": "ok",
    f"{OUTLINES}/json.lark": "ok",
    f"{OUTLINES}/lark.lark": "ok",
    f"{OUTLINES}/lisp.lark": "ok",
    f"{OUTLINES}/python3.lark": ("GrammarSyntaxError", LOOKAHEAD_PAST_END, 318),
    f"{OUTLINES}/python3_interactive.lark": ("GrammarSyntaxError", LOOKAHEAD_PAST_END, 318),
    f"{OUTLINES}/sql_select.lark": "ok",
    f"{OUTLINES}/sqlite.lark": "ok",
    f"{OUTLINES}/yaml.lark": "ok",
}

#: Grammar -> sample files (globs) it must accept.
SAMPLES = {
    f"{OUTLINES}/json.lark": f"{OUTLINES}/cfg_samples/json/*",
    "outlines/head/src/outlines/grammars/json.lark": "outlines/head/tests/cfg_samples/json/*",
    f"{OUTLINES}/arithmetic.lark": f"{OUTLINES}/cfg_samples/arithmetic/*",
    "outlines/head/src/outlines/grammars/arithmetic.lark": "outlines/head/tests/cfg_samples/arithmetic/*",
    f"{OUTLINES}/sql_select.lark": f"{OUTLINES}/cfg_samples/sql_select/*",
    f"{OUTLINES}/csv.lark": f"{OUTLINES}/cfg_samples/csv/*",
    f"{OUTLINES}/lark.lark": f"{OUTLINES}/cfg_samples/lark/*",
}

#: Grammars cross-checked with random sentences (fast enough under Lark's Earley parser).
CROSS_CHECKED = [
    f"{OUTLINES}/json.lark",
    "outlines/head/src/outlines/grammars/json.lark",
    "lark-parser/examples/standalone/json.lark",
    f"{OUTLINES}/arithmetic.lark",
    "outlines/head/src/outlines/grammars/arithmetic.lark",
    f"{OUTLINES}/csv.lark",
    "lark-parser/examples/composition/csv.lark",
    "lark-parser/examples/composition/storage.lark",
    f"{OUTLINES}/lisp.lark",
    "lark-parser/tests/grammars/ab.lark",
    "lark-parser/examples/relative-imports/multiples.lark",
    f"{OUTLINES}/lark.lark",
    "llguidance/sample_parser/data/lark.lark",
]
NUM_SENTENCES = 15
NUM_MUTATIONS = 3


def start_rule(text: str) -> str:
    """`start` if the grammar defines it, else its first rule (terminal-only files keep `start`)."""
    found = re.search(r"^[?!]?(start)\s*:", text, re.MULTILINE) or re.search(
        r"^[?!]?([a-z_][a-z0-9_]*)\s*(\.\d+)?\s*:", text, re.MULTILINE
    )
    return found.group(1) if found else "start"


def load(relative: str):
    path = CORPUS / relative
    text = path.read_text(encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LarkPriorityWarning)
        grammar = lark_grammar(text, start=start_rule(text), import_paths=[str(path.parent)])
    return text, grammar


def lark_parser(relative: str, text: str) -> Lark:
    path = CORPUS / relative
    return Lark(text, parser="earley", lexer="dynamic", start=start_rule(text), import_paths=[str(path.parent)])


def lark_accepts(parser: Lark, text: str) -> bool:
    try:
        parser.parse(text)
    except LarkError:
        return False
    return True


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CORPUS.is_dir(), reason="the shared Lark corpus is not on this machine"),
]


def test_expected_covers_the_whole_corpus():
    found = {str(p.relative_to(CORPUS)) for p in CORPUS.rglob("*.lark")}
    assert found == set(EXPECTED)


@pytest.mark.parametrize("relative", sorted(EXPECTED))
def test_corpus_grammar_loads_or_names_the_problem(relative):
    expected = EXPECTED[relative]
    try:
        _text, grammar = load(relative)
        compile_grammar(grammar)
        outcome: tuple[str, str, int | None] | str = "ok"
    except GrammarError as error:
        line = error.line if isinstance(error, GrammarSyntaxError) else None
        outcome = (type(error).__name__, getattr(error, "reason", str(error)), line)
    print(f"\n{relative:75s} {outcome if outcome == 'ok' else outcome[0] + ': ' + outcome[1][:70]}")
    if expected == "ok" or outcome == "ok":
        assert outcome == expected
    else:
        assert (outcome[0], outcome[2]) == (expected[0], expected[2]) and expected[1] in outcome[1]


@pytest.mark.parametrize(
    "relative",
    [
        "lark-parser/lark/grammars/common.lark",
        "lark-parser/lark/grammars/unicode.lark",
        f"{OUTLINES}/common.lark",
        "outlines/head/src/outlines/grammars/common.lark",
    ],
)
def test_every_terminal_of_terminal_libraries_translates(relative):
    path = CORPUS / relative
    names = re.findall(r"^([A-Z_][A-Z_0-9]*)\s*(?:\.\d+)?\s*:", path.read_text(encoding="utf-8"), re.MULTILINE)
    refused = {}
    for name in names:
        try:
            lark_grammar(f"start: {name}\n%import .{path.stem}.{name}\n", import_paths=[str(path.parent)])
        except GrammarSyntaxError as error:
            refused[name] = error.reason
    # Only a fragment can be refused: common's _STRING_ESC_INNER alone has its lookbehind at the start
    assert set(refused) <= {"_STRING_ESC_INNER"} and len(names) > len(refused)


def accepted_form(path: Path, parser: Lark | None) -> str:
    """The sample: the file as is, or without its final line break when only that form is a
    sentence for Lark (files end with a line break that some grammars cannot take)."""
    text = path.read_text(encoding="utf-8")
    if parser is None or lark_accepts(parser, text) or not text.endswith("\n"):
        return text
    return text[:-1]


def broken_forms(sample: str) -> list[str]:
    """The sample with a control character injected, and with each of its last closing brackets deleted."""
    forms = [f"\x01{sample}", sample[: len(sample) // 2] + "\x01" + sample[len(sample) // 2 :]]
    positions = [i for i, char in enumerate(sample) if char in ")]}"][-3:]
    forms.extend(sample[:i] + sample[i + 1 :] for i in positions)
    return forms


@pytest.mark.parametrize("relative", sorted(SAMPLES))
def test_samples_are_accepted_and_mutated_samples_rejected(relative):
    text, grammar = load(relative)
    constraint = compile_grammar(grammar)
    samples = sorted(CORPUS.glob(SAMPLES[relative]))
    assert samples
    # Lark's Earley parser takes seconds per SQL sample: there we check our side only.
    parser = None if "sql_select" in relative else lark_parser(relative, text)
    for path in samples:
        sample = accepted_form(path, parser)
        assert constraint.accepts(sample), path.name
        verdicts = [
            (constraint.accepts(broken), None if parser is None else lark_accepts(parser, broken))
            for broken in broken_forms(sample)
        ]
        assert verdicts[0] == (False, False if parser else None), path.name  # \x01 first: never valid
        if parser is not None:
            assert [ours for ours, _theirs in verdicts] == [theirs for _ours, theirs in verdicts], path.name
        elif len(verdicts) > 2:  # no oracle: deleting one of the last closing brackets must break it
            assert not all(ours for ours, _theirs in verdicts[2:]), path.name


def test_lark_grammar_of_lark_agrees_with_lark_on_every_corpus_file():
    relative = f"{OUTLINES}/lark.lark"
    text, grammar = load(relative)
    constraint = compile_grammar(grammar)
    # Lark's LALR parser: this grammar is written for it, and Earley takes 30 s over the corpus
    parser = Lark(text, parser="lalr", import_paths=[str((CORPUS / relative).parent)])
    texts = {str(p.relative_to(CORPUS)): p.read_text(encoding="utf-8") for p in sorted(CORPUS.rglob("*.lark"))}
    verdicts = {name: (constraint.accepts(t), lark_accepts(parser, t)) for name, t in texts.items()}
    assert {name: v for name, v in verdicts.items() if v[0] != v[1]} == {}
    assert sum(ours for ours, _lark in verdicts.values()) >= len(verdicts) - 1


@pytest.mark.parametrize("relative", CROSS_CHECKED)
def test_random_sentences_and_mutations_agree_with_lark(relative):
    text, grammar = load(relative)
    constraint = compile_grammar(grammar)
    parser = lark_parser(relative, text)
    rng = random.Random(relative)
    generator = SentenceGenerator(grammar, rng)
    counts = {"agree": 0, "greedy lexing": 0}
    others = []
    num_sentences = 0
    for _attempt in range(5 * NUM_SENTENCES):
        sentence = generator.sentence()
        if sentence is None:
            continue
        num_sentences += 1
        for candidate in [sentence, *mutations(sentence, rng, NUM_MUTATIONS)]:
            ours, theirs = constraint.accepts(candidate), lark_accepts(parser, candidate)
            if ours == theirs:
                counts["agree"] += 1
            elif theirs and rejected_by_greedy_lexing(constraint.automaton, candidate):
                counts["greedy lexing"] += 1
            else:
                others.append((candidate, ours, theirs))
        if num_sentences == NUM_SENTENCES:
            break
    print(f"\n{relative:60s} sentences {num_sentences}, {counts}")
    assert num_sentences == NUM_SENTENCES
    assert others == []
