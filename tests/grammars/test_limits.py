"""Budgets of the grammar core: runaway constraints end in ConstraintLimitError, process-wide tables stay bounded."""

import itertools

import pytest

import grammars
from grammars.core import byte_regex as rx
from grammars.core import ir, lexer, parser
from grammars.core.automaton import GrammarAutomaton
from grammars.core.budget import Budget
from grammars.errors import ConstraintLimitError
from grammars.frontends.regex.syntax import regex_term

PALINDROME = "start: p\np: letter | " + " | ".join(f'"{c}" p "{c}"' for c in "abcdefghijklmnopqrstuvwxyz")
PALINDROME += "\nletter: /[a-z]/\n"
#: Ten stacked negative lookaheads: every lexer state needs an emptiness search of the product.
LOOKAHEADS = "".join(f"(?!.*{c})" for c in "abcdefghij") + "[a-z]{0,40}"


def _grammar(term: rx.Term) -> ir.Grammar:
    return ir.RuleSet().grammar(ir.lex(term, "t"))


def test_expired_compile_budget_is_a_named_limit():
    with pytest.raises(ConstraintLimitError, match="compiling the grammar exceeded its time budget of 0 s"):
        GrammarAutomaton(_grammar(rx.literal(b"x")), budget=Budget(0))


def test_slow_lexer_rows_stop_at_the_budget():
    term = regex_term(LOOKAHEADS, flavor="python")
    automaton = GrammarAutomaton(_grammar(term))
    start = automaton.lexer_start(automaton.parser.initial)
    budget = Budget(0, what="the first rows")  # spent at once: no dependence on how fast rows are
    with pytest.raises(ConstraintLimitError, match="the first rows exceeded its time budget"):
        for byte in b"klmnopqrstuvwxyz":  # each new row searches the emptiness of its successors
            start = automaton.lexer.row(start, budget.check)[byte]


def test_emptiness_search_stops_at_the_budget():
    term = rx.intersect(*(rx.complement(rx.concat(rx.ANYTHING, rx.literal(bytes([c])))) for c in b"abcdefghij"))
    with pytest.raises(ConstraintLimitError):
        rx.is_empty(rx.intersect(term, rx.literal(b"x")), Budget(0).check)


def test_ambiguous_grammar_ends_in_a_frame_budget_not_gigabytes():
    automaton = grammars.compile(grammars.Lark(PALINDROME), cache=False).automaton
    state = automaton.walk(automaton.initial, b"abcdefghijklmnopqrstuvwxy" * 2)
    assert state is not None
    # What a mask does: walk many distinct tokens from one state, each a configuration of ~50 stacks.
    with pytest.raises(ConstraintLimitError, match=f"budget of {parser.MAX_FRAMES} stack frames"):
        for word in itertools.product(b"abcdefghijklmnopqrstuvwxyz", repeat=4):
            automaton.walk(state, bytes(word))
    assert automaton.parser.num_frames <= parser.MAX_FRAMES + 10_000


def test_a_worn_constraint_starts_new_matchers_on_a_fresh_automaton(monkeypatch, vocab):
    from grammars.core import automaton as automaton_module

    constraint = grammars.compile({"type": "array", "items": {"$ref": "#"}}, cache=False)  # nested arrays
    worn = constraint.automaton
    old = constraint.matcher(vocab)
    frames_before = worn.parser.num_frames
    for depth in range(2, 40):  # every depth is a new configuration of deeper stacks
        worn.walk(worn.initial, b"[" * depth)
    monkeypatch.setattr(automaton_module, "MAX_FRAMES", 2 * (frames_before + 1))
    assert worn.is_worn
    fresh = constraint.matcher(vocab)
    assert constraint.automaton is not worn and not constraint.automaton.is_worn
    for matcher in (old, fresh):  # the live matcher keeps its automaton and both still work
        for token_id in vocab_ids(vocab, "[[]]"):
            matcher.advance(token_id)
        assert matcher.is_accepting()


def vocab_ids(vocab, text: str) -> list[int]:
    """Single-byte token ids spelling `text`."""
    return [vocab.token_bytes.index(bytes([byte])) for byte in text.encode()]


@pytest.mark.slow
def test_thousands_of_stacked_optional_items_need_no_recursion_and_accepts_is_budgeted(monkeypatch):
    from grammars import compiler

    constraint = grammars.compile(grammars.Regex("a?" * 5000), cache=False)  # derivatives 5,000 deep
    assert constraint.accepts("a") and not constraint.accepts("b")
    monkeypatch.setattr(compiler, "MAX_ACCEPTS_SECONDS", 0.5)
    with pytest.raises(ConstraintLimitError, match="checking a text against the constraint"):
        constraint.accepts("a" * 100)  # each new lexer state costs most of a second


def test_a_lone_surrogate_is_in_no_language():
    assert not grammars.compile(grammars.Regex(".*")).accepts("a\ud800")


def test_a_rule_of_five_thousand_alternatives_compiles():
    # Deduplicating choices was quadratic: 5,000 alternatives ran into the compile budget.
    text = "start: " + " | ".join(f'"w{i}x"' for i in range(5000))
    constraint = grammars.compile(grammars.Lark(text), cache=False)
    assert constraint.accepts("w4999x") and not constraint.accepts("w5000x")


def test_a_huge_lark_grammar_is_refused_before_lark_reads_it():
    rules = "\n".join(f'r{i}: "x{i}" r{i + 1}?' for i in range(30_000))  # 750 KB: Lark's loader alone took 51 s
    with pytest.raises(ConstraintLimitError, match="the limit is"):
        grammars.compile(grammars.Lark(f'start: r0\n{rules}\nr30000: "end"\n'))


def test_grammar_size_budget(monkeypatch):
    from grammars.core import normalize

    monkeypatch.setattr(normalize, "MAX_GRAMMAR_SIZE", 50)
    items = [ir.lex(rx.literal(f"w{i}".encode()), "w") for i in range(60)]
    with pytest.raises(ConstraintLimitError, match="budget of 50 expression nodes"):
        GrammarAutomaton(ir.RuleSet().grammar(ir.seq(*items)))


@pytest.mark.slow
def test_many_distinct_schemas_keep_the_tables_bounded_and_working(monkeypatch):
    monkeypatch.setattr(lexer, "NEW_GENERATION_STATES", 60)
    monkeypatch.setattr(lexer, "MAX_STATES", 600)
    monkeypatch.setattr(rx, "MAX_INTERNED_TERMS", 5_000)
    monkeypatch.setattr(lexer, "_current", lexer.LexerTables())
    first = grammars.compile({"type": "object", "properties": {"key0": {"type": "integer"}}}, cache=False)
    generations = set()
    for i in range(1, 3_000):
        constraint = grammars.compile(
            {"type": "object", "properties": {f"key{i}": {"enum": [i, f"v{i}"]}}}, cache=False
        )
        assert constraint.accepts(f'{{"key{i}": "v{i}"}}')
        generations.add(constraint.automaton.lexer.generation)
        assert constraint.automaton.lexer.num_states < lexer.MAX_STATES
        assert rx.num_interned() <= rx.MAX_INTERNED_TERMS
    assert len(generations) > 10
    # The first automaton kept its own (old) generation: its states still mean what they meant.
    assert first.accepts('{"key0": 12}')
    assert not first.accepts('{"key0": "12"}')


def test_lexer_tables_take_new_states_in_place_up_to_their_reserve():
    """A generation's tables have room for RESERVED_STATES from the start (zeroed pages cost memory only
    once written), so new states never copy them below it: a copy took tens of ms inside one mask."""
    tables = lexer.LexerTables()
    trans, has_row, has_entry, accepting = tables.tables()
    assert len(trans) == len(has_row) == len(has_entry) == len(accepting) == lexer.RESERVED_STATES
    first = tables.num_states
    for _ in range(5_000):
        tables._allocate(True, ())
    assert all(now is before for now, before in zip(tables.tables(), (trans, has_row, has_entry, accepting)))
    assert accepting[first : first + 5_000].all()


def test_term_generations_keep_languages(monkeypatch):
    monkeypatch.setattr(rx, "MAX_INTERNED_TERMS", 50)
    old = rx.concat(rx.literal(b"ab"), rx.star(rx.byte_range(ord("0"), ord("9"))))
    for i in range(200):  # enough new terms for several generations
        rx.literal(f"filler{i}".encode())
    assert rx.num_interned() <= 50
    assert rx.matches(old, b"ab123")
    assert not rx.matches(old, b"a1")
    assert rx.alt(rx.EMPTY, rx.EPSILON) is rx.EPSILON
    assert rx.star(rx.ANY_BYTE) is rx.ANYTHING


def test_a_mask_past_its_budget_fails_later_masks_of_the_constraint_at_once(vocab):
    constraint = grammars.compile(grammars.Regex(LOOKAHEADS), cache=False)
    first = constraint.matcher(vocab)
    first.mask(max_seconds=0.05)
    assert isinstance(first.error, ConstraintLimitError)
    num_states = constraint.automaton.lexer.num_states
    second = constraint.matcher(vocab)
    second.mask(max_seconds=60)  # would resume the walk, adding lexer rows request after request
    assert isinstance(second.error, ConstraintLimitError) and "an earlier mask" in str(second.error)
    assert constraint.automaton.lexer.num_states == num_states


def test_after_the_cool_down_a_failed_constraint_may_try_again(vocab, monkeypatch):
    from grammars.masking import masks

    constraint = grammars.compile(grammars.Regex(LOOKAHEADS), cache=False)
    constraint.matcher(vocab).mask(max_seconds=0.05)
    monkeypatch.setattr(masks, "FAILURE_COOLDOWN_SECONDS", 0.0)
    retry = constraint.matcher(vocab)
    retry.mask(max_seconds=0.05)  # computes again (and runs past its budget again)
    assert isinstance(retry.error, ConstraintLimitError) and "an earlier mask" not in str(retry.error)
