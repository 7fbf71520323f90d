"""Engine: generate, the step API, stops, constraints, preemption and thread safety.

Most tests drive the engine over `FakeRunner` (a paged toy model whose outputs are checked against a
cache-free reference); `test_engine_models.py` runs the real decoder.
"""

from __future__ import annotations

import math
import random
import threading

import pytest
import torch

from grammars.errors import GrammarError, StencilError
from runtime.engine.llm_engine import Engine
from runtime.engine.sampling_params import SamplingParams
from runtime.errors import PromptTooLongError, RequestError
from tests.runtime.fakes import (
    FAKE_VOCAB_SIZE,
    DigitsConstraint,
    FakeRunner,
    reference_greedy,
    reference_logits,
    smollm2_tokenizer,
)

GREEDY = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)


def make_engine(num_blocks: int = 256, block_size: int = 4, vocab_size: int = FAKE_VOCAB_SIZE, **limits: int) -> Engine:
    runner = FakeRunner(num_blocks=num_blocks, block_size=block_size, vocab_size=vocab_size)
    return Engine(runner, smollm2_tokenizer(), **limits)


def prompts(count: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(3, 200) for _ in range(rng.randrange(1, 15))] for _ in range(count)]


def assert_pool_whole(engine: Engine) -> None:
    manager = engine.block_manager
    assert not engine.has_unfinished_requests()
    assert manager.num_free_blocks == manager.num_blocks
    assert all(manager.ref_count(block_id) == 0 for block_id in range(manager.num_blocks))


def test_greedy_batch_matches_the_cache_free_reference() -> None:
    engine = make_engine()
    batch = prompts(6)
    outputs = engine.generate(batch, GREEDY)
    for prompt, output in zip(batch, outputs):
        assert list(output.token_ids) == reference_greedy(prompt, 12)
        assert output.finish_reason == "length"
        assert output.usage.prompt_tokens == len(prompt) and output.usage.completion_tokens == 12
        assert output.text == engine.tokenizer.decode(list(output.token_ids), skip_special_tokens=True)
    assert engine.runner.max_batch_size == 6  # one batch, not one prompt at a time
    assert_pool_whole(engine)


def test_batch_equals_one_at_a_time() -> None:
    batch = prompts(5, seed=1)
    together = make_engine().generate(batch, GREEDY)
    alone = [make_engine().generate([prompt], GREEDY)[0] for prompt in batch]
    assert [o.token_ids for o in together] == [o.token_ids for o in alone]


def _record_passes(engine: Engine) -> list[list[tuple[int, int]]]:
    """(positions cached, tokens fed) of each sequence, per forward pass of the engine's runner."""
    passes: list[list[tuple[int, int]]] = []
    forward = engine.runner.forward

    def recording_forward(batch):
        passes.append([(cached, len(token_ids)) for cached, token_ids in zip(batch.num_cached, batch.token_ids)])
        return forward(batch)

    engine.runner.forward = recording_forward
    return passes


def test_prompts_are_prefilled_together_and_their_tails_in_a_pass_of_their_own() -> None:
    engine = make_engine(block_size=4)
    passes = _record_passes(engine)
    batch = [[10 + i] * 9 for i in range(6)]  # last cacheable block ends at 8: one tail token each
    outputs = engine.generate(batch, GREEDY.replace(max_tokens=2))
    assert [list(output.token_ids) for output in outputs] == [reference_greedy(prompt, 2) for prompt in batch]
    assert passes == [[(0, 8)] * 6, [(8, 1)] * 6, [(9, 1)] * 6]


def test_a_warm_prompt_tail_is_fed_as_on_the_cold_run() -> None:
    engine = make_engine(block_size=4, max_num_seqs=2, max_num_batched_tokens=6)
    passes = _record_passes(engine)
    prompt = list(range(20, 32))  # 12 tokens: blocks [0, 8) cacheable, a 4-token tail
    engine.generate([prompt], GREEDY.replace(max_tokens=1))
    assert passes[-1] == [(8, 4)]
    passes.clear()
    engine.generate([[90, 91, 92, 93], prompt], GREEDY.replace(max_tokens=1))  # behind another request
    assert passes == [[(0, 4)], [(8, 4)]]  # the tail waits for a pass with room for all of it


def test_parallel_samples_count_against_max_num_seqs() -> None:
    engine = make_engine(max_num_seqs=4, max_num_batched_tokens=64)
    params = SamplingParams(temperature=1.0, seed=0, n=4, max_tokens=3, ignore_eos=True)
    outputs = engine.generate([[5, 6, 7], [8, 9], [10, 11], [12, 13]], params)
    assert [len(output.outputs) for output in outputs] == [4, 4, 4, 4]
    assert engine.runner.max_batch_size == 4
    assert_pool_whole(engine)


def test_a_small_pool_preempts_and_still_matches_the_reference() -> None:
    engine = make_engine(num_blocks=12, block_size=4)
    batch = prompts(8, seed=2)
    params = SamplingParams(temperature=0.0, max_tokens=20, ignore_eos=True)
    outputs = engine.generate(batch, params)
    assert engine.scheduler.num_preemptions > 0
    for prompt, output in zip(batch, outputs):
        assert list(output.token_ids) == reference_greedy(prompt, 20)
    assert_pool_whole(engine)


def test_long_prompts_are_prefilled_in_chunks() -> None:
    engine = make_engine(max_num_seqs=4, max_num_batched_tokens=8)
    batch = [list(range(3, 40)), list(range(50, 71))]
    outputs = engine.generate(batch, GREEDY)
    for prompt, output in zip(batch, outputs):
        assert list(output.token_ids) == reference_greedy(prompt, 12)
    assert engine.runner.max_num_tokens == 8
    # Chunks of at most 8 tokens; a prompt's tokens after its last cacheable block (blocks of 4) get a
    # pass of their own: 37 tokens as 8+8+8+8+4 then 1, 21 as 7+8+5 then 1; then 11 decode steps.
    assert engine.runner.num_forward_calls == 9 + 11


def test_prefix_cache_skips_the_shared_prompt_and_keeps_outputs() -> None:
    engine = make_engine()
    prompt = list(range(3, 30))
    first = engine.generate([prompt], GREEDY)[0]
    assert engine.block_manager.num_cached_blocks > 0
    fed = []
    original_forward = engine.runner.forward
    engine.runner.forward = lambda batch: (fed.append(sum(map(len, batch.token_ids))), original_forward(batch))[1]
    second = engine.generate([prompt], GREEDY)[0]
    assert second.token_ids == first.token_ids
    assert fed[0] < len(prompt)


def test_parallel_greedy_samples_share_the_prompt_and_copy_on_write() -> None:
    engine = make_engine()
    prompt = list(range(3, 13))  # ends inside a block, so the first decode writes a shared block
    output = engine.generate([prompt], SamplingParams(temperature=0.0, max_tokens=8, n=3, ignore_eos=True))[0]
    expected = reference_greedy(prompt, 8)
    assert [list(c.token_ids) for c in output.outputs] == [expected] * 3
    assert [c.index for c in output.outputs] == [0, 1, 2]
    assert engine.runner.num_copied_blocks >= 2
    assert output.usage.completion_tokens == 24
    assert_pool_whole(engine)


def test_seeded_sampling_is_reproducible_and_samples_differ() -> None:
    params = SamplingParams(temperature=1.0, max_tokens=10, n=4, seed=123, ignore_eos=True)
    first = make_engine().generate([[5, 6, 7]], params)[0]
    # The same request in a different batch gives the same samples: generators are per sequence.
    second = make_engine().generate([[9, 9], [5, 6, 7]], [GREEDY, params])[1]
    assert [c.token_ids for c in first.outputs] == [c.token_ids for c in second.outputs]
    assert len({c.token_ids for c in first.outputs}) > 1


def test_stop_string_across_tokens_is_cut_and_never_streamed() -> None:
    engine = make_engine()
    prompt = [40, 41, 42]
    full = engine.generate([prompt], GREEDY)[0].text
    stop = full[4:7]  # spans token boundaries (the fake's live tokens are 1-2 characters long)
    assert stop not in full[:4]
    params = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True, stop=[stop, "never-there"])
    deltas = []
    output = None
    for update in engine.stream(prompt, params):
        deltas.append(update.text)
        output = update.output or output
    assert output.text == full[: full.index(stop)]
    assert output.finish_reason == "stop"
    assert "".join(deltas) == output.text
    assert_pool_whole(engine)


def test_stop_token_is_kept_in_ids_but_not_in_text() -> None:
    engine = make_engine()
    prompt = [40, 41, 42]
    expected = reference_greedy(prompt, 12)
    stop_id = expected[3]
    first_stop = expected.index(stop_id)
    output = engine.generate([prompt], GREEDY.replace(stop_token_ids=[stop_id]))[0]
    assert list(output.token_ids) == expected[: first_stop + 1]
    assert output.finish_reason == "stop"
    assert output.text == engine.tokenizer.decode(expected[:first_stop], skip_special_tokens=True)


def test_eos_ends_unless_ignored() -> None:
    engine = make_engine()
    eos = engine.tokenizer.eos_token_ids[0]
    prompt = next(p for p in prompts(200, seed=5) if eos in reference_greedy(p, 30)[1:])
    expected = reference_greedy(prompt, 30)
    output = engine.generate([prompt], SamplingParams(temperature=0.0, max_tokens=30))[0]
    assert output.finish_reason == "stop" and output.token_ids[-1] in engine.tokenizer.eos_token_ids
    assert list(output.token_ids) == expected[: len(output.token_ids)]
    ignoring = engine.generate([prompt], SamplingParams(temperature=0.0, max_tokens=30, ignore_eos=True))[0]
    assert list(ignoring.token_ids) == expected


def test_logprobs_report_the_chosen_token_and_the_top_alternatives() -> None:
    engine = make_engine()
    prompt = [10, 20, 30]
    output = engine.generate([prompt], SamplingParams(temperature=0.0, max_tokens=3, logprobs=2, ignore_eos=True))[0]
    context = list(prompt)
    total = 0.0
    for entry in output.logprobs:
        expected = reference_logits(context).log_softmax(-1)
        assert entry.logprob == pytest.approx(expected[entry.token_id].item(), abs=1e-5)
        assert [t for t, _ in entry.top_logprobs] == expected.topk(2).indices.tolist()
        assert entry.top_logprobs[0][0] == entry.token_id  # greedy picks the top one
        total += entry.logprob
        context.append(entry.token_id)
    assert output.outputs[0].cumulative_logprob == pytest.approx(total)


def test_digits_constraint_keeps_every_sequence_in_the_language() -> None:
    engine = make_engine()
    constraint = DigitsConstraint(max_digits=4)
    batch = prompts(4, seed=3)
    outputs = engine.generate(
        batch, SamplingParams(temperature=0.8, seed=1, max_tokens=10, n=2), constraints=constraint
    )
    assert constraint.num_matchers == len(batch)  # the samples fork their matchers
    for output in outputs:
        for completion in output.outputs:
            assert completion.finish_reason == "stop", completion
            assert completion.text.isdigit() and len(completion.text) <= 4
            assert completion.token_ids[-1] in engine.tokenizer.eos_token_ids
    assert_pool_whole(engine)


def test_constraints_per_prompt_may_be_none() -> None:
    engine = make_engine()
    outputs = engine.generate(
        [[50, 51], [50, 51]], GREEDY.replace(ignore_eos=False), constraints=[DigitsConstraint(), None]
    )
    assert outputs[0].text.isdigit()
    assert (
        list(outputs[1].token_ids)[: len(outputs[1].token_ids)]
        == reference_greedy([50, 51], 12)[: len(outputs[1].token_ids)]
    )


class _BrokenMatcher:
    def __init__(self, error: GrammarError | None, allow_nothing: bool) -> None:
        self.error = error
        self._allow_nothing = allow_nothing

    def mask(self, max_seconds: float | None = None, max_remaining_tokens: int | None = None) -> torch.Tensor:
        mask = torch.ones(49152, dtype=torch.bool)
        return mask & False if self._allow_nothing else mask

    def advance(self, token_id: int) -> None:
        pass

    def is_accepting(self) -> bool:
        return False

    def fork(self) -> _BrokenMatcher:
        return self


class _BrokenConstraint:
    def __init__(self, error: GrammarError | None = None, allow_nothing: bool = False) -> None:
        self.error, self.allow_nothing = error, allow_nothing

    def matcher(self, vocab: object) -> _BrokenMatcher:
        return _BrokenMatcher(self.error, self.allow_nothing)


@pytest.mark.parametrize(
    "constraint", [_BrokenConstraint(GrammarError("state budget")), _BrokenConstraint(allow_nothing=True)]
)
def test_a_matcher_that_cannot_go_on_ends_its_sequence_with_error(constraint: _BrokenConstraint) -> None:
    engine = make_engine()
    outputs = engine.generate(
        [[5, 6], [7, 8]], [GREEDY.replace(ignore_eos=False), GREEDY], constraints=[constraint, None]
    )
    assert outputs[0].finish_reason == "error" and isinstance(outputs[0].error, GrammarError)
    assert outputs[0].token_ids == ()
    assert outputs[1].finish_reason == "length"
    assert_pool_whole(engine)


def test_eos_before_the_constraint_accepts_is_an_error() -> None:
    engine = make_engine()
    eos = engine.tokenizer.eos_token_ids[0]

    class EosOnly(_BrokenConstraint):
        def matcher(self, vocab: object) -> _BrokenMatcher:
            matcher = _BrokenMatcher(None, allow_nothing=False)
            only_eos = torch.zeros(49152, dtype=torch.bool)
            only_eos[eos] = True
            matcher.mask = lambda max_seconds=None, max_remaining_tokens=None: only_eos
            return matcher

    output = engine.generate([[5, 6]], GREEDY.replace(ignore_eos=False), constraints=EosOnly())[0]
    assert output.finish_reason == "error" and "before the constraint" in str(output.error)


def test_bad_requests_raise_typed_errors_before_anything_runs() -> None:
    engine = make_engine(num_blocks=16)
    with pytest.raises(PromptTooLongError) as too_long:
        engine.generate([[5] * 600], GREEDY)
    assert too_long.value.num_prompt_tokens == 600
    with pytest.raises(RequestError, match="KV blocks") as too_big:
        engine.generate([[5, 6]], SamplingParams(max_tokens=200))
    assert too_big.value.field == "max_tokens"
    cases = [
        (dict(prompts=[[]]), "prompts[0]"),
        (dict(prompts=[[5, 10**6]]), "prompts[0][1]"),
        (dict(prompts=[3.5]), "prompts[0]"),
        (dict(prompts=[[5]], params={"max_tokens": 3}), "params"),
        (dict(prompts=[[5], [6]], params=[GREEDY]), "params"),
        (dict(prompts=[[5]], params=GREEDY.replace(n=64)), "n"),
        (dict(prompts=[[5]], params=GREEDY, constraints=DigitsConstraint()), "ignore_eos"),
        (dict(prompts=[[5]], params=GREEDY.replace(stop_token_ids=[FAKE_VOCAB_SIZE])), "stop_token_ids"),
    ]
    for kwargs, field in cases:
        with pytest.raises(RequestError) as error:
            engine.generate(kwargs.pop("prompts"), kwargs.pop("params", GREEDY), **kwargs)
        assert error.value.field == field
    assert_pool_whole(engine)
    assert issubclass(RequestError, StencilError)


@pytest.mark.parametrize(
    ("limits", "field"),
    [
        (dict(max_num_seqs=0), "max_num_seqs"),
        (dict(max_num_seqs=8, max_num_batched_tokens=4), "max_num_batched_tokens"),
        (dict(max_model_len=513), "max_model_len"),
    ],
)
def test_engine_limits_are_checked(limits: dict, field: str) -> None:
    with pytest.raises(RequestError) as error:
        make_engine(**limits)
    assert error.value.field == field


def test_text_prompts_go_through_the_chat_template() -> None:
    engine = make_engine()
    output = engine.generate("hello", GREEDY)[0]
    expected_prompt = engine.tokenizer.apply_chat_template([{"role": "user", "content": "hello"}], tokenize=True)
    assert list(output.prompt_token_ids) == expected_prompt


def test_thousand_requests_with_aborts_leave_the_pool_whole() -> None:
    engine = make_engine(num_blocks=64, block_size=4, vocab_size=256, max_num_seqs=32, max_num_batched_tokens=64)
    rng = random.Random(7)
    request_ids = []
    for index, prompt in enumerate(prompts(1000, seed=11)):
        params = SamplingParams(
            temperature=rng.choice([0.0, 1.0]), max_tokens=rng.randrange(1, 8), n=rng.choice([1, 1, 2]), seed=index
        )
        request_ids.append(engine.add_request(prompt, params))
    to_abort = set(rng.sample(request_ids, 150))
    finished = {}
    num_steps = 0
    while engine.has_unfinished_requests():
        for update in engine.step():
            if update.is_finished:
                finished[update.request_id] = update.output
        num_steps += 1
        if num_steps % 3 == 0 and to_abort:
            engine.abort_request(to_abort.pop())
    aborted = set(request_ids) - set(finished)
    assert 0 < len(aborted) <= 150
    assert all(1 <= len(c.token_ids) for o in finished.values() for c in o.outputs)
    assert engine.scheduler.num_preemptions > 0  # the pool was tight
    assert_pool_whole(engine)
    assert not engine.abort_request(request_ids[0]) or request_ids[0] in aborted


def test_add_and_abort_from_another_thread_while_stepping() -> None:
    engine = make_engine(num_blocks=64, vocab_size=256)
    stop = threading.Event()
    finished: dict[str, object] = {}
    errors: list[BaseException] = []

    def drive() -> None:
        try:
            while not stop.is_set() or engine.has_unfinished_requests():
                for update in engine.step():
                    if update.is_finished:
                        finished[update.request_id] = update.output
        except BaseException as exc:  # noqa: BLE001 - surfaced to the test thread below
            errors.append(exc)

    driver = threading.Thread(target=drive)
    driver.start()
    ids = [engine.add_request(p, SamplingParams(max_tokens=6, seed=i)) for i, p in enumerate(prompts(200, seed=4))]
    for request_id in ids[::4]:
        engine.abort_request(request_id)
    stop.set()
    driver.join(timeout=60)
    assert not driver.is_alive() and not errors
    assert set(ids[1::4]) <= set(finished)
    assert_pool_whole(engine)


def test_abort_midway_frees_blocks_at_once() -> None:
    engine = make_engine()
    request_id = engine.add_request([5, 6, 7, 8, 9], GREEDY)
    engine.step()
    engine.step()
    assert engine.block_manager.num_used_blocks > 0
    assert engine.abort_request(request_id)
    assert engine.block_manager.num_used_blocks == 0
    assert engine.step() == []
    assert not engine.abort_request(request_id)


def test_step_updates_stream_tokens_and_text() -> None:
    engine = make_engine()
    request_id = engine.add_request([40, 41, 42], GREEDY)
    token_ids: list[int] = []
    text = ""
    while engine.has_unfinished_requests():
        for update in engine.step():
            assert update.request_id == request_id
            (delta,) = update.deltas
            token_ids += delta.token_ids
            text += delta.text
            if update.is_finished:
                assert delta.finish_reason == "length"
                assert update.output.text == text and list(update.output.token_ids) == token_ids
    assert token_ids == reference_greedy([40, 41, 42], 12)


def test_penalties_change_greedy_choices_away_from_repeats() -> None:
    engine = make_engine()
    prompt = [40, 41, 42]
    plain = engine.generate([prompt], GREEDY.replace(max_tokens=30))[0]
    penalized = engine.generate([prompt], GREEDY.replace(max_tokens=30, frequency_penalty=2.0, presence_penalty=2.0))[0]
    repeats = lambda ids: len(ids) - len(set(ids))  # noqa: E731
    assert repeats(penalized.token_ids) < repeats(plain.token_ids)
    assert math.isfinite(len(penalized.token_ids))


def test_a_compiled_grammar_constrains_parallel_samples_and_beams() -> None:
    import grammars

    engine = make_engine()
    constraint = grammars.compile(grammars.Regex(r"[0-9]{1,4}-[a-z]{2}"))
    sampled = engine.generate(
        [[5, 6, 7]], SamplingParams(temperature=1.0, seed=3, max_tokens=20, n=2), constraints=constraint
    )
    beams = engine.generate(
        [[5, 6, 7]], SamplingParams(temperature=0.0, max_tokens=20, num_beams=2, n=2), constraints=constraint
    )
    for completion in [*sampled[0].outputs, *beams[0].outputs]:
        assert completion.finish_reason == "stop"
        assert constraint.accepts(completion.text), completion.text
    assert_pool_whole(engine)


def test_public_names_are_pinned() -> None:
    import runtime

    assert runtime.__all__ == sorted(runtime.__all__)
    assert set(runtime.__all__) == {
        "CacheBusyError", "ChatTemplateError", "CompletionDelta", "CompletionOutput", "Constraint", "CorruptModelError",
        "DEFAULT_DTYPE", "Engine", "EngineError", "FinishReason", "ModelConfig", "ModelLoadError",
        "ModelNotFoundError", "PromptTooLongError", "RequestError", "RequestOutput", "RequestUpdate",
        "SamplingParams", "TokenLogprob", "TokenMatcher", "Tokenizer", "UnsupportedModelError", "Usage", "load",
    }  # fmt: skip


def test_abort_landing_during_the_forward_pass_drops_its_results() -> None:
    engine = make_engine()
    keep = engine.add_request([5, 6, 7], GREEDY)
    doomed = engine.add_request([8, 9], GREEDY)
    forward = engine.runner.forward
    calls = []

    def forward_then_abort(batch: object) -> torch.Tensor:
        logits = forward(batch)
        calls.append(len(calls))
        if len(calls) == 3:
            assert engine.abort_request(doomed)  # as another thread would, while step() waits on the model
        return logits

    engine.runner.forward = forward_then_abort
    finished = {}
    while engine.has_unfinished_requests():
        for update in engine.step():
            assert update.request_id == keep or len(calls) < 3
            if update.is_finished:
                finished[update.request_id] = update.output
    assert list(finished) == [keep]
    assert list(finished[keep].token_ids) == reference_greedy([5, 6, 7], 12)
    assert_pool_whole(engine)
