"""Speculative decoding and jump-forward: same greedy outputs, same sampling distribution, KV pool whole.

The engine runs over `FakeRunner` (logits a pure function of the tokens read back through the block
tables), so a draft that leaves a wrong token or a stale block behind changes the output.
"""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
import torch
from pydantic import BaseModel

import grammars
import runtime
from runtime.engine.draft_rates import RowCost, confidence_level, draft_length
from runtime.engine.draft_text import earlier_spelling, ends_clause, is_punctuation, longest_earlier_match
from runtime.engine.draft_walk import Draft
from runtime.engine.llm_engine import Engine
from runtime.engine.sampling_params import SamplingParams
from runtime.engine.sequence import Sequence
from runtime.engine.speculative import SpeculativeConfig, Speculator
from runtime.errors import RequestError
from tests.runtime.fakes import FakeRunner, smollm2_tokenizer

GREEDY = SamplingParams(temperature=0.0, max_tokens=40)
#: Rows cost nothing here, so every draft is verified whole (drafting does not follow the fake's timings).
CONFIGS = {
    "both": SpeculativeConfig(verify_row_cost=0.0),
    "jump_forward": SpeculativeConfig(prompt_lookup=False, verify_row_cost=0.0),
    "prompt_lookup": SpeculativeConfig(jump_forward=False, num_draft_tokens=3, verify_row_cost=0.0),
}


class Person(BaseModel):
    name: str
    age: int


SPECS = {
    "free": None,
    "json": Person,
    "regex": grammars.Regex(r"(ab|cd)[0-9]{1,4}-x{3}(yz)?"),
    "lark": grammars.Lark('start: "call " NAME "(" NUM ("," NUM)* ");"\nNAME: /[a-z]{1,8}/\nNUM: /[0-9]{1,3}/'),
}


def make_engine(speculative: SpeculativeConfig | None, num_blocks: int = 256, **limits: int) -> Engine:
    runner = FakeRunner(num_blocks=num_blocks, block_size=4)
    return Engine(runner, smollm2_tokenizer(), speculative=speculative, **limits)


def prompts(count: int, seed: int) -> list[list[int]]:
    """Prompts that repeat themselves, so prompt lookup finds matches (and its drafts get accepted)."""
    rng = random.Random(seed)
    return [[rng.randrange(3, 200) for _ in range(rng.randrange(2, 9))] * 3 for _ in range(count)]


def assert_pool_whole(engine: Engine) -> None:
    manager = engine.block_manager
    assert not engine.has_unfinished_requests()
    assert manager.num_free_blocks == manager.num_blocks
    assert all(manager.ref_count(block_id) == 0 for block_id in range(manager.num_blocks))


def count_drafts(engine: Engine) -> Counter[str]:
    """Wrap the engine's verification to count drafted and accepted tokens."""
    counts: Counter[str] = Counter()
    speculator = engine.speculator
    assert speculator is not None
    verify = speculator.verify

    def counting_verify(logits: torch.Tensor, seq: Sequence, params: SamplingParams, draft: Draft):
        token_ids, rows = verify(logits, seq, params, draft)
        counts["drafted"] += len(draft.token_ids)
        counts["accepted"] += len(token_ids) - 1
        return token_ids, rows

    speculator.verify = counting_verify  # type: ignore[method-assign]
    return counts


@pytest.mark.parametrize("kind", list(SPECS))
def test_greedy_outputs_are_identical_with_each_fast_path(kind: str) -> None:
    spec = SPECS[kind]
    constraint = None if spec is None else grammars.compile(spec)
    batch = prompts(13, seed=len(kind))  # 4 kinds x 13 = 52 prompts
    expected = [o.outputs[0].token_ids for o in make_engine(None).generate(batch, GREEDY, constraints=constraint)]
    for name, config in CONFIGS.items():
        engine = make_engine(config)
        counts = count_drafts(engine)
        outputs = engine.generate(batch, GREEDY, constraints=constraint)
        assert [o.outputs[0].token_ids for o in outputs] == expected, name
        assert sum(o.usage.draft_tokens for o in outputs) == counts["drafted"]
        assert sum(o.usage.accepted_draft_tokens for o in outputs) == counts["accepted"]
        assert counts["drafted"] > 0 or (spec is None and not config.prompt_lookup), name  # free text forces nothing
        assert_pool_whole(engine)
    assert counts["accepted"] > 0  # the both-sources engine: some drafts were verified as right


def test_drafts_go_through_stops_limits_penalties_and_logprobs_as_plain_steps() -> None:
    batch = prompts(6, seed=7)
    params = [
        GREEDY.replace(max_tokens=5),
        GREEDY.replace(stop=("a",)),
        GREEDY.replace(repetition_penalty=1.3, frequency_penalty=0.5),
        GREEDY.replace(logprobs=2),
        GREEDY.replace(stop_token_ids=(60, 61, 62)),
        GREEDY.replace(n=3, max_tokens=9),
    ]
    plain = make_engine(None).generate(batch, params)
    engine = make_engine(SpeculativeConfig(jump_forward=False, verify_row_cost=0.0))
    fast = engine.generate(batch, params)
    for expected, got in zip(plain, fast):
        for a, b in zip(expected.outputs, got.outputs):
            assert (a.token_ids, a.text, a.finish_reason) == (b.token_ids, b.text, b.finish_reason)
            if a.logprobs is not None:
                assert b.logprobs is not None
                for x, y in zip(a.logprobs, b.logprobs):
                    assert x.token_id == y.token_id and x.logprob == pytest.approx(y.logprob, abs=1e-5)
                    assert [t for t, _ in x.top_logprobs] == [t for t, _ in y.top_logprobs]
    assert_pool_whole(engine)


def test_a_small_pool_drops_drafts_rather_than_preempting_and_keeps_outputs() -> None:
    batch = prompts(4, seed=3)
    params = GREEDY.replace(max_tokens=16, ignore_eos=True)
    expected = [o.token_ids for o in make_engine(None).generate(batch, params)]
    engine = make_engine(SpeculativeConfig(jump_forward=False, verify_row_cost=0.0), num_blocks=40, max_num_seqs=4)
    assert [o.token_ids for o in engine.generate(batch, params)] == expected
    assert_pool_whole(engine)


def test_rejected_drafts_roll_back_tokens_and_blocks_mid_generation() -> None:
    engine = make_engine(SpeculativeConfig(jump_forward=False, num_draft_tokens=6, verify_row_cost=0.0))
    counts = count_drafts(engine)
    prompt = prompts(1, seed=11)[0]
    request_id = engine.add_request(prompt, GREEDY.replace(max_tokens=30, ignore_eos=True))
    manager = engine.block_manager
    while engine.has_unfinished_requests():
        engine.step()
        request = engine._requests.get(request_id)
        if request is None:
            break
        (seq,) = request.seqs
        if seq.num_completion_tokens == 0:
            continue  # mid-way through the prompt's prefill
        # After every step: exactly the accepted tokens, cached but the last, and no block past them.
        assert seq.num_cached == seq.num_tokens - 1
        num_blocks = len(seq.block_table)
        assert manager.num_blocks_for(seq.num_cached) <= num_blocks <= manager.num_blocks_for(seq.num_tokens)
        assert manager.num_used_blocks == len(seq.block_table)
    assert counts["drafted"] > counts["accepted"]  # some drafts were rejected and rolled back
    assert_pool_whole(engine)


def test_abort_between_draft_and_forward_leaves_the_pool_whole() -> None:
    engine = make_engine(SpeculativeConfig(verify_row_cost=0.0))
    speculator = engine.speculator
    assert speculator is not None
    propose_batch = speculator.propose_batch
    ids = [engine.add_request(p, GREEDY.replace(ignore_eos=True)) for p in prompts(3, seed=5)]

    def aborting_propose_batch(candidates):
        engine.abort_request(ids[0])  # lands while the step is outside the engine lock
        return propose_batch(candidates)

    engine.step()  # prefill
    speculator.propose_batch = aborting_propose_batch  # type: ignore[method-assign]
    while engine.has_unfinished_requests():
        engine.step()
    assert_pool_whole(engine)


def test_beam_search_is_never_drafted() -> None:
    engine = make_engine(SpeculativeConfig())
    counts = count_drafts(engine)
    params = SamplingParams(max_tokens=8, num_beams=2, ignore_eos=True)
    expected = make_engine(None).generate(prompts(2, seed=1), params)
    assert [o.token_ids for o in engine.generate(prompts(2, seed=1), params)] == [o.token_ids for o in expected]
    assert counts["drafted"] == 0


def test_config_is_validated() -> None:
    with pytest.raises(RequestError) as info:
        SpeculativeConfig(num_draft_tokens=0)
    assert info.value.field == "num_draft_tokens"
    for cost in (1.0, -0.1, True, "0.3"):
        with pytest.raises(RequestError) as info:
            SpeculativeConfig(verify_row_cost=cost)  # type: ignore[arg-type]
        assert info.value.field == "verify_row_cost"
    with pytest.raises(RequestError):
        SpeculativeConfig(jump_forward=False, prompt_lookup=False)
    with pytest.raises(RequestError) as info:
        make_engine("ngram")  # type: ignore[arg-type]
    assert info.value.field == "speculative"


def test_jump_forward_drafts_the_forced_text_as_the_tokenizer_writes_it() -> None:
    engine = make_engine(SpeculativeConfig(prompt_lookup=False))
    assert engine.speculator is not None
    constraint = grammars.compile(grammars.Regex(r'\{"name": "[a-z]+"\}'))
    matcher = constraint.matcher(engine.vocabulary)
    seq = Sequence(seq_id=0, token_ids=[5, 6], num_prompt_tokens=2, matcher=matcher)
    draft = engine.speculator.propose(seq, GREEDY, budget=20)
    assert draft is not None and draft.masks is not None
    tokenizer = smollm2_tokenizer()
    assert draft.token_ids == tokenizer.encode('{"name": "')
    assert all(kind.startswith("forced") for kind in draft.kinds) and len(draft.masks) == len(draft.token_ids) + 1
    assert all(bool(mask[token_id]) for mask, token_id in zip(draft.masks, draft.token_ids))
    assert seq.matcher is matcher and matcher.mask()[draft.token_ids[0]]  # the walk used a fork


def test_jump_forward_drafts_only_whole_characters() -> None:
    engine = make_engine(SpeculativeConfig(prompt_lookup=False))
    assert engine.speculator is not None
    constraint = grammars.compile(grammars.Regex("name: caf(é|è)"))  # é, è: C3 A9, C3 A8
    matcher = constraint.matcher(engine.vocabulary)
    assert matcher.forced_bytes() == b"name: caf\xc3"  # ends mid-character
    seq = Sequence(seq_id=0, token_ids=[5, 6], num_prompt_tokens=2, matcher=matcher)
    draft = engine.speculator.propose(seq, GREEDY, budget=20)
    assert draft is not None
    assert draft.token_ids == smollm2_tokenizer().encode("name: caf")


def test_lookup_drafts_what_followed_the_longest_earlier_match_as_it_was_written() -> None:
    """Text is matched, not tokens: the answer's `"Margaret` has no space where the prompt's
    ` Margaret` token has one, yet the copy goes on with the prompt's tokens after it."""
    tokenizer = smollm2_tokenizer()
    engine = make_engine(SpeculativeConfig(jump_forward=False, verify_row_cost=0.0))
    assert engine.speculator is not None
    prompt = tokenizer.encode("Filed by: Margaret Okonkwo, Senior Reliability Engineer.\n")
    after = prompt[prompt.index(tokenizer.encode(" Margaret")[0]) + 1 :]
    for answer, head in (('{"filed_by": "Margaret', []), ('{"filed_by": "Marg', tokenizer.encode("aret"))):
        seq = Sequence(seq_id=0, token_ids=prompt + tokenizer.encode(answer), num_prompt_tokens=len(prompt))
        draft = engine.speculator.propose(seq, GREEDY, budget=20)
        assert draft is not None
        assert draft.token_ids == (head + after)[: len(draft.token_ids)] and len(draft.token_ids) == 6


def test_longest_earlier_match_finds_the_latest_occurrence_of_the_longest_suffix() -> None:
    assert longest_earlier_match(b"xabc-abc+abc", 64) == (3, 8)  # "abc", latest earlier one ends at 8
    assert longest_earlier_match(b"xabc-zabc", 64) == (3, 4)
    assert longest_earlier_match(b"xabc-zabc", 2) == (2, 4)
    assert longest_earlier_match(b"abcd", 64) == (0, 0)


def test_earlier_spelling_finds_the_token_aligned_spelling_covering_most_of_the_forced_text() -> None:
    pieces = [b'{"', b"p", b"ro", b"d", b"uct", b'":', b' "', b"pro", b"bably", b'", "']
    text = b"".join(pieces)
    ends = [sum(map(len, pieces[: i + 1])) for i in range(len(pieces))]
    assert earlier_spelling(text, ends, b'pros": [') == (7, 1)  # `pro`: as much as `p` `ro`, and later
    assert earlier_spelling(text, ends, b'product": 1') == (1, 5)  # the whole key, as it was spelled
    assert earlier_spelling(text, ends, b"rating") == (0, 0)  # `ra` never occurs
    assert earlier_spelling(text, ends, b"pr!") == (0, 0)  # of `pr`, whole tokens spell only `p`
    assert earlier_spelling(text, ends, b"oduct") == (0, 0)  # `od` occurs, but not at a token's start


def test_jump_forward_drafts_forced_text_as_the_sequence_spelled_it_before() -> None:
    """A key's `firmware` written `f` `irm` `ware` once is drafted that way the next time it is forced."""
    tokenizer = smollm2_tokenizer()
    engine = make_engine(SpeculativeConfig(prompt_lookup=False, verify_row_cost=0.0))
    assert engine.speculator is not None
    constraint = grammars.compile(grammars.Regex(r'\{"bad_firmware": "[a-z]+", "old_firmware": "[a-z]+"\}'))
    matcher = constraint.matcher(engine.vocabulary)
    spelled = [tokenizer.encode(piece)[0] for piece in ("f", "irm", "ware")]
    assert spelled != tokenizer.encode("firmware")
    written = tokenizer.encode('{"bad_') + spelled + tokenizer.encode('": "x", "old_')
    for token_id in written:
        matcher.advance(token_id)
    seq = Sequence(seq_id=0, token_ids=[5, 6, *written], num_prompt_tokens=2, matcher=matcher)
    draft = engine.speculator.propose(seq, GREEDY, budget=20)
    assert draft is not None
    assert draft.token_ids[:3] == spelled and draft.kinds[:3] == ["spelled-first", "spelled", "spelled"]
    assert tokenizer.decode(draft.token_ids) == 'firmware": "'


def test_ends_clause_at_a_line_break_or_punctuation_before_white_space() -> None:
    text = b"Daniel Verhoeven, switched (4.2.1) to v4.2.\nNext"
    assert ends_clause(text, text.index(b","))  # `, `
    assert ends_clause(text, text.index(b")"))  # `) `
    assert ends_clause(text, text.index(b"\n"))
    assert not ends_clause(text, text.index(b".2.1"))  # a dot inside a number
    assert not ends_clause(text, text.index(b" switched"))
    assert not ends_clause(text, len(text))
    assert is_punctuation(b'",') and is_punctuation(b")") and not is_punctuation(b" ,") and not is_punctuation(b"a,")


def _copy_in_progress() -> tuple[Engine, Sequence, list[int]]:
    """A JSON answer copying `Daniel Verhoeven` from its prompt, up to where the prompt's clause ends
    (`, switched`); and the prompt's tokens after the name."""
    tokenizer = smollm2_tokenizer()
    engine = make_engine(SpeculativeConfig(verify_row_cost=0.0))
    prompt = tokenizer.encode("The supervisor, Daniel Verhoeven, switched the line to manual.\n")
    constraint = grammars.compile(Person)
    matcher = constraint.matcher(engine.vocabulary)
    answer = tokenizer.encode('{"name": "Daniel Verhoeven')
    for token_id in answer:
        matcher.advance(token_id)
    seq = Sequence(seq_id=0, token_ids=prompt + answer, num_prompt_tokens=len(prompt), matcher=matcher)
    return engine, seq, tokenizer.encode(", switched")


def test_a_copy_drafts_the_token_that_ended_copies_before_where_its_clause_ends() -> None:
    """Where the copied text's clause ends, the draft weighs going on with the copy against a token
    that ended copies before (`",`), drafts the likelier, keeps the other for verification to count,
    and goes on with the structure the constraint forces after it."""
    engine, seq, after = _copy_in_progress()
    speculator = engine.speculator
    assert speculator is not None
    alone = speculator.propose(seq, GREEDY, budget=30)  # no copy has ended yet: the copy goes on
    assert alone is not None and alone.token_ids[0] == after[0] and alone.kinds[0] == "lookup-boundary"
    end = smollm2_tokenizer().encode('",')
    assert len(end) == 1
    speculator._copy_ends[end[0]] = 1
    draft = speculator.propose(seq, GREEDY, budget=30)
    assert draft is not None and draft.token_ids[0] == end[0] and draft.kinds[0] == "copy-end"
    assert (0, "lookup-boundary", after[0]) in draft.alternatives
    assert smollm2_tokenizer().decode(draft.token_ids) == '", "age":'  # the next key, to where white space may come


def test_verification_counts_the_alternatives_it_reached_and_learns_what_ended_a_copy() -> None:
    engine, seq, after = _copy_in_progress()
    speculator = engine.speculator
    assert speculator is not None
    end = smollm2_tokenizer().encode('",')[0]
    draft = speculator.propose(seq, GREEDY, budget=30)
    assert draft is not None and draft.kinds[0] == "lookup-boundary"
    draft.alternatives.append((0, "copy-end", end))
    logits = torch.zeros(len(draft.token_ids) + 1, engine.vocabulary.size)
    logits[0, end] = 5.0  # the target ends the copy
    token_ids, _ = speculator.verify(logits, seq, GREEDY, draft)
    assert token_ids == [end]
    history = speculator._history(seq)
    assert history.acceptance.accepted == {"lookup-boundary": 0.0, "copy-end": 1.0}
    assert history.acceptance.reached == {"lookup-boundary": 1.0, "copy-end": 1.0}
    assert speculator._copy_ends == {end: 1}  # a looked-up token rejected for punctuation: a copy's end


def test_forced_text_starting_a_word_is_spelled_as_the_model_spelled_such_words() -> None:
    """A key's first word may be written as the tokenizer writes it (`shift`) or first letter first
    (`s` `hift`); the draft takes the spelling whose kind verification accepted more often."""
    tokenizer = smollm2_tokenizer()
    engine = make_engine(SpeculativeConfig(prompt_lookup=False, verify_row_cost=0.0))
    speculator = engine.speculator
    assert speculator is not None
    constraint = grammars.compile(grammars.Regex(r'\{"shift": "[a-z]+"\}'))
    matcher = constraint.matcher(engine.vocabulary)
    for token_id in tokenizer.encode('{"'):
        matcher.advance(token_id)
    seq = Sequence(seq_id=0, token_ids=[5, 6, *tokenizer.encode('{"')], num_prompt_tokens=2, matcher=matcher)
    whole = speculator.propose(seq, GREEDY, budget=20)
    assert whole is not None and whole.kinds[0] == "forced-word-first"
    assert tokenizer.decode(whole.token_ids[:1]) == "shift"
    assert (0, "split-first", tokenizer.encode("s")[0]) in whole.alternatives
    for _ in range(20):  # verification found the model writing such words first letter first
        speculator._acceptance.record_one("split-first", True)
        speculator._acceptance.record_one("forced-word-first", False)
    split = speculator.propose(seq, GREEDY, budget=20)
    assert split is not None and split.kinds[0] == "split-first"
    assert split.token_ids[0] == tokenizer.encode("s")[0]
    assert tokenizer.decode(split.token_ids).startswith('shift": "')


def test_greedy_verification_masks_only_a_row_whose_argmax_the_mask_refuses() -> None:
    """Without penalties or logprobs, a greedy verification leaves rows unmasked: a row whose
    argmax the mask refuses is masked and its argmax taken again, so a draft token the mask kept
    is still accepted; with logprobs, every row comes back masked."""
    speculator = Speculator(SpeculativeConfig(), smollm2_tokenizer(), frozenset())
    vocab_size = 8
    masks = [torch.tensor([i in allowed for i in range(vocab_size)]) for allowed in ({2, 3}, {4, 5}, {6})]
    logits = torch.zeros(3, vocab_size)
    logits[0, 7], logits[0, 3] = 9.0, 5.0  # row 0: the argmax 7 is refused, the draft token 3 is next best
    logits[1, 5] = 4.0  # row 1: 5, the draft token
    logits[2, 0], logits[2, 6] = 9.0, 1.0  # row 2 (the target's own token): 0 refused, 6 allowed
    for params in (GREEDY, SamplingParams(temperature=0.0, max_tokens=40, logprobs=1)):
        seq = Sequence(seq_id=0, token_ids=[1, 2], num_prompt_tokens=2)
        draft = Draft(token_ids=[3, 5], masks=masks, kinds=["lookup-3", "lookup-3"])
        token_ids, rows = speculator.verify(logits.clone(), seq, params, draft)
        assert token_ids == [3, 5, 6]
        if params.logprobs is not None:
            assert bool((rows[~torch.stack(masks)] == -torch.inf).all())


def test_confidence_levels_and_the_level_a_verification_leaves() -> None:
    assert [confidence_level(p) for p in (0.1, 0.5, 0.95)] == ["low", "mid", "high"]
    speculator = Speculator(SpeculativeConfig(), smollm2_tokenizer(), frozenset())
    seq = Sequence(seq_id=0, token_ids=[1, 2], num_prompt_tokens=2)
    logits = torch.zeros(2, 8)
    logits[:, 3] = 20.0  # sure of 3 at both positions
    token_ids, _ = speculator.verify(logits, seq, GREEDY, Draft(token_ids=[3], masks=None, kinds=["lookup-3"]))
    assert token_ids == [3, 3]
    history = speculator._history(seq)
    assert (history.confidence, history.confidence_at) == ("high", 4)


def test_drafts_go_through_the_runaway_guard_as_plain_steps() -> None:
    """A looping array (`[0,0,0,...`) is closed by the runaway guard at the same token with drafts
    (prompt lookup drafts the loop on and on) as without: a draft position's mask is the closing
    mask wherever the plain step's would be."""
    from tests.runtime.test_runaway import LoopingRunner, token_id

    constraint = grammars.compile(list[int])
    outputs = []
    for config in (None, SpeculativeConfig(verify_row_cost=0.0)):
        runner = LoopingRunner({token_id(b"0"): 60.0, token_id(b","): 50.0})
        engine = Engine(runner, smollm2_tokenizer(), speculative=config)
        output = engine.generate([[5, 6, 7]], GREEDY, constraints=constraint)[0]
        outputs.append(list(output.outputs[0].token_ids))
        assert constraint.accepts(output.outputs[0].text) and output.outputs[0].finish_reason == "stop"
        assert config is None or output.usage.accepted_draft_tokens > 0
    assert outputs[0] == outputs[1] and len(outputs[0]) < 30  # closed early, at the same token


class _NothingAfterForcedText:
    """A matcher forcing `hello`, after whose first token its mask allows nothing (and no error is set)."""

    error = None

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size, self.num_advanced = vocab_size, 0

    def mask(self, max_seconds: float | None = None, max_remaining_tokens: int | None = None) -> torch.Tensor:
        return torch.full((self.vocab_size,), self.num_advanced == 0)

    def advance(self, token_id: int) -> None:
        self.num_advanced += 1

    def forced_bytes(self) -> bytes:
        return b"hello" if self.num_advanced == 0 else b""

    def fork(self) -> _NothingAfterForcedText:
        twin = _NothingAfterForcedText(self.vocab_size)
        twin.num_advanced = self.num_advanced
        return twin


def test_a_draft_never_ends_where_the_mask_allows_nothing() -> None:
    """Only a draft's last mask is checked for allowing something (the others allow the token after
    them); a token after which nothing is allowed is dropped, so the bonus row can always sample."""
    engine = make_engine(SpeculativeConfig(prompt_lookup=False, verify_row_cost=0.0))
    assert engine.speculator is not None
    matcher = _NothingAfterForcedText(engine.vocabulary.size)
    seq = Sequence(seq_id=0, token_ids=[5, 6], num_prompt_tokens=2, matcher=matcher)  # type: ignore[arg-type]
    assert smollm2_tokenizer().encode("hello")  # what jump-forward would draft
    assert engine.speculator.propose(seq, GREEDY, budget=20) is None


def test_draft_length_verifies_only_tokens_whose_chance_pays_for_their_row() -> None:
    assert draft_length([1.0] * 6, 0.3) == 6
    assert draft_length([0.2] * 6, 0.3) == 0  # a token accepted 1 time in 5 is not worth 0.3 of a step
    assert draft_length([0.95, 0.95, 0.1, 0.9], 0.3) == 2
    assert draft_length([0.5] * 6, 0.0) == 6  # free rows: verify everything
    assert draft_length([0.9] * 8, 0.3) < draft_length([0.9] * 8, 0.1)


def test_row_cost_is_fitted_to_timed_passes_once_their_rows_vary() -> None:
    cost = RowCost(0.3)
    for _ in range(20):
        cost.observe(1, 0.012)
    assert cost.value == 0.3  # every pass had one row: nothing to fit yet
    fixed = RowCost(0.3, is_fixed=True)
    for rows in [1, 3, 5, 7] * 10:
        cost.observe(rows, 0.010 + 0.002 * rows)
        fixed.observe(rows, 0.010 + 0.002 * rows)
    assert fixed.value == 0.3
    assert cost.value == pytest.approx(0.002 / 0.012, rel=0.05)
    assert cost.per_sequence(1) == pytest.approx(cost.value)
    assert cost.per_sequence(8) == pytest.approx(0.002 / (0.010 / 8 + 0.002), rel=0.05)  # the fixed cost is shared


def test_row_cost_ignores_passes_slowed_by_cold_masks_or_a_busy_machine() -> None:
    cost = RowCost(0.3)
    for index, rows in enumerate([1, 2, 4] * 20):
        is_slow = index % 5 == 0  # every fifth pass, a cold mask takes ten times the pass
        cost.observe(rows, (0.010 + 0.002 * rows) * (10.0 if is_slow else 1.0))
    assert cost.value == pytest.approx(0.002 / 0.012, rel=0.05)


def test_row_cost_is_fitted_to_batched_passes_whose_row_counts_rarely_repeat() -> None:
    cost = RowCost(0.3)
    rng = random.Random(0)
    for _ in range(60):
        rows = rng.randrange(8, 48)  # eight sequences, each with its own draft
        cost.observe(rows, 0.020 + 0.002 * rows)
    assert cost.value == pytest.approx(0.002 / 0.022, rel=0.1)


# Sampling exactness


def chi_square_critical(df: int, z: float = 3.09) -> float:
    """The 0.999 quantile of chi-square with `df` degrees of freedom (Wilson-Hilferty)."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def two_sample_chi_square(samples: list[Counter[tuple[int, ...]]]) -> tuple[float, float]:
    """(statistic, 0.999 critical value) of two samples having one distribution (rare outcomes pooled)."""
    outcomes = sorted(set(samples[0]) | set(samples[1]))
    frequent = [o for o in outcomes if samples[0][o] + samples[1][o] >= 10]
    rows = [[s[o] for o in frequent] + [sum(s.values()) - sum(s[o] for o in frequent)] for s in samples]
    rows = [[row[i] for i in range(len(rows[0])) if rows[0][i] + rows[1][i] > 0] for row in rows]
    totals = [sum(row) for row in rows]
    statistic = 0.0
    for i in range(len(rows[0])):
        column = rows[0][i] + rows[1][i]
        for row, total in zip(rows, totals):
            expected = column * total / sum(totals)
            statistic += (row[i] - expected) ** 2 / expected
    return statistic, chi_square_critical(max(1, len(rows[0]) - 1))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_verification_samples_the_target_distribution_whatever_the_draft(seed: int) -> None:
    speculator = Speculator(SpeculativeConfig(), smollm2_tokenizer(), frozenset())
    torch.manual_seed(seed)
    vocab_size = 6
    logits = torch.randn(2, vocab_size) * 1.5  # positions 0 and 1 of a one-token draft
    probs = logits.softmax(dim=-1)
    draft_token = int(probs[0].argsort()[-2])  # a plausible but not the likeliest token
    params = SamplingParams(temperature=1.0)
    generator = torch.Generator().manual_seed(seed)
    num_samples = 4000
    first: Counter[int] = Counter()
    second_after_draft: Counter[int] = Counter()
    for _ in range(num_samples):
        seq = Sequence(seq_id=0, token_ids=[1, 2], num_prompt_tokens=2, generator=generator)
        draft = Draft(token_ids=[draft_token], masks=None, kinds=["lookup-3"])
        token_ids, _ = speculator.verify(logits.clone(), seq, params, draft)
        first[token_ids[0]] += 1
        if len(token_ids) == 2:
            second_after_draft[token_ids[1]] += 1
    for counts, expected_probs in ((first, probs[0]), (second_after_draft, probs[1])):
        total = sum(counts.values())
        statistic = sum(
            (counts[t] - total * float(p)) ** 2 / (total * float(p)) for t, p in enumerate(expected_probs.tolist())
        )
        assert statistic < chi_square_critical(vocab_size - 1), (counts, expected_probs)


@pytest.mark.parametrize("seed", [0, 1])
def test_engine_next_tokens_have_the_plain_distribution_at_temperature_1(seed: int) -> None:
    """Two-sample chi-square over the two tokens after the first sampled one (the first decode
    step's draft decides them), speculation on vs off, top-k 3 keeping the outcomes few."""
    prompt = list(range(200))  # every live token occurs in the prompt: lookup always drafts
    params = SamplingParams(temperature=1.0, top_k=3, max_tokens=3, ignore_eos=True, n=300, seed=seed)
    samples = []
    for config in (None, SpeculativeConfig(jump_forward=False, num_draft_tokens=2, verify_row_cost=0.0)):
        engine = make_engine(config, num_blocks=16000, max_num_seqs=300)
        output = engine.generate([prompt], params)[0]
        samples.append(Counter(tuple(c.token_ids[1:]) for c in output.outputs))
        assert_pool_whole(engine)
    statistic, critical = two_sample_chi_square(samples)
    assert statistic < critical


# The real model


class Invoice(BaseModel):
    customer: str
    city: str
    total: float


_PEOPLE = [("Ada Lovelace", 36), ("Bob Stone", 41), ("Chen Wei", 29), ("Dana Scully", 33), ("Emil Novak", 58)]
_CITIES = ["Paris", "Lima", "Oslo", "Cairo", "Kyoto"]
_FUNCTIONS = ["add", "max", "min", "mul", "concat"]
_TOPICS = ["the sea", "a forest", "winter", "a train station", "bread", "the moon"]

#: 50 prompts over the four kinds of output: free text, JSON, regex and Lark.
REAL_PROMPTS: list[tuple[str, object]] = [
    *[(f"Write one sentence about {topic}.", None) for topic in _TOPICS],
    *[
        (f"Repeat exactly: {name} lives in {city} and is {age} years old.", None)
        for (name, age), city in zip(_PEOPLE, _CITIES, strict=True)
    ],
    *[(f"Give a person named {name}, aged {age}, as JSON.", Person) for name, age in _PEOPLE],
    *[(f"{name} is {age} years old. Extract the name and age as JSON.", Person) for name, age in _PEOPLE],
    *[
        (f"Invoice: customer {name}, city {city}, total {age * 37.5:.2f} EUR. Extract it as JSON.", Invoice)
        for (name, age), city in zip(_PEOPLE, _CITIES, strict=True)
    ],
    *[(f"Write a product code for {topic}.", grammars.Regex(r"[A-Z]{3}-[0-9]{4}")) for topic in _TOPICS[:5]],
    *[
        (f"The date is 2024-0{month}-1{month}. Repeat the date.", grammars.Regex(r"[0-9]{4}-[0-9]{2}-[0-9]{2}"))
        for month in range(1, 6)
    ],
    *[
        (f"Answer yes or no: is {topic} cold?", grammars.Regex(r"(yes|no), because [a-z ]{1,40}\."))
        for topic in _TOPICS[:4]
    ],
    *[(f"Call the function {name} with 3 and 4.", SPECS["lark"]) for name in _FUNCTIONS],
    *[(f"Call {name} on 10, 20 and 30.", SPECS["lark"]) for name in _FUNCTIONS[:4]],
    ("Write a call to a function.", SPECS["lark"]),
]


@pytest.mark.slow
def test_greedy_outputs_on_smollm2_are_identical_with_each_fast_path() -> None:
    """In the default mode (bfloat16, 4-bit weights): decode and verify passes are batch invariant
    (tests/runtime/test_batch_invariance.py), so each fast path gives plain decoding's tokens exactly."""
    assert len(REAL_PROMPTS) == 50
    params = SamplingParams(temperature=0.0, max_tokens=40)
    texts = [prompt for prompt, _ in REAL_PROMPTS]
    constraints = [None if spec is None else grammars.compile(spec) for _, spec in REAL_PROMPTS]
    # Every prompt admitted at once, so both runs prefill them in the same pass: prefill passes (dense
    # weights, SDPA) are not batch invariant, and a prompt admitted later would share its prefill with
    # whatever else is admitted then, which the fast paths change.
    plain_engine = runtime.load(max_num_seqs=len(texts))
    plain = [o.outputs[0].token_ids for o in plain_engine.generate(texts, params, constraints=constraints)]
    for config in (  # rows taken as free: every draft is verified whole, whatever the batch
        SpeculativeConfig(prompt_lookup=False, verify_row_cost=0.0),
        SpeculativeConfig(jump_forward=False, verify_row_cost=0.0),
        SpeculativeConfig(verify_row_cost=0.0),
    ):
        engine = runtime.load(max_num_seqs=len(texts), speculative=config)
        fast = engine.generate(texts, params, constraints=constraints)
        assert [o.outputs[0].token_ids for o in fast] == plain, config
        assert sum(o.usage.accepted_draft_tokens for o in fast) > 0, config
        assert_pool_whole(engine)
