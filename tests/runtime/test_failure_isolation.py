"""One request's constraint never takes down the others: exceptions, slow masks and aborts during them."""

from __future__ import annotations

import threading

import pytest
import torch

import grammars
from grammars.errors import ConstraintLimitError, GrammarError, MatcherFailedError
from runtime.engine.llm_engine import Engine
from runtime.engine.sampling_params import SamplingParams
from runtime.errors import RequestError
from tests.runtime.fakes import FAKE_VOCAB_SIZE, FakeRunner, smollm2_tokenizer

GREEDY = SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True)
CONSTRAINED = SamplingParams(temperature=0.0, max_tokens=6)
#: Eight stacked lookaheads: the first mask of this regex takes minutes (lexer states multiply).
SLOW_REGEX = "".join(f"(?=.*{letter})" for letter in "abcdefgh") + ".{0,40}"


def make_engine(**options: object) -> Engine:
    return Engine(FakeRunner(num_blocks=256, block_size=4), smollm2_tokenizer(), **options)


def assert_pool_whole(engine: Engine) -> None:
    assert not engine.has_unfinished_requests()
    assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks


class _FailingMatcher:
    """Allows every token, but raises `exc` from the method named `failing`."""

    def __init__(self, failing: str, exc: BaseException) -> None:
        self.error = None
        self._failing, self._exc = failing, exc

    def _maybe_fail(self, name: str) -> None:
        if name == self._failing:
            raise self._exc

    def mask(self, max_seconds: float | None = None, max_remaining_tokens: int | None = None) -> torch.Tensor:
        self._maybe_fail("mask")
        return torch.ones(FAKE_VOCAB_SIZE, dtype=torch.bool)

    def advance(self, token_id: int) -> None:
        self._maybe_fail("advance")

    def is_accepting(self) -> bool:
        return False

    def fork(self) -> _FailingMatcher:
        self._maybe_fail("fork")
        return self


class _FailingConstraint:
    def __init__(self, failing: str, exc: BaseException) -> None:
        self.failing, self.exc = failing, exc

    def matcher(self, vocab: object) -> _FailingMatcher:
        if self.failing == "matcher":
            raise self.exc
        return _FailingMatcher(self.failing, self.exc)


@pytest.mark.parametrize("exc", [RecursionError("maximum recursion depth exceeded"), MemoryError(), KeyError("bug")])
@pytest.mark.parametrize("failing", ["mask", "advance", "fork"])
def test_a_matcher_exception_ends_its_request_alone(failing: str, exc: BaseException) -> None:
    engine = make_engine()
    bad_params = GREEDY.replace(ignore_eos=False, n=2, temperature=1.0, seed=1)  # n=2 forks the matcher
    outputs = engine.generate(
        [[5, 6], [7, 8]], [bad_params, GREEDY], constraints=[_FailingConstraint(failing, exc), None]
    )
    bad, good = outputs
    # A failed fork fails the copy only: the parent's matcher is sound.
    failed = bad.outputs[1:] if failing == "fork" else bad.outputs
    assert [completion.finish_reason for completion in bad.outputs] == ["length"] * (2 - len(failed)) + ["error"] * len(
        failed
    )
    for completion in failed:
        assert isinstance(completion.error, MatcherFailedError) and completion.error.operation == failing
        assert completion.error.__cause__ is exc
    assert good.finish_reason == "length" and len(good.token_ids) == GREEDY.max_tokens
    assert_pool_whole(engine)


def test_a_matcher_that_cannot_be_built_fails_only_its_add_request() -> None:
    engine = make_engine()
    kept = engine.add_request([7, 8], GREEDY)
    with pytest.raises(MatcherFailedError) as error:
        engine.add_request([5, 6], GREEDY.replace(ignore_eos=False), _FailingConstraint("matcher", RecursionError()))
    assert isinstance(error.value.__cause__, RecursionError) and isinstance(error.value, GrammarError)
    finished = [update for _ in range(GREEDY.max_tokens) for update in engine.step() if update.is_finished]
    assert [update.request_id for update in finished] == [kept]
    assert_pool_whole(engine)


@pytest.mark.parametrize(
    "spec",
    [grammars.Regex("ab" * 1500), grammars.Choice(["y" * 3000]), {"const": "x" * 3000}],
    ids=["regex", "choice", "const"],
)
def test_long_literals_constrain_without_recursion_errors(spec: object) -> None:
    """These overflowed the stack in `clamp_counters` on the first mask and failed the whole step."""
    engine = make_engine()
    bad, good = engine.generate([[5, 6], [7, 8]], [CONSTRAINED, GREEDY], constraints=[grammars.compile(spec), None])
    assert bad.finish_reason == "length" and bad.error is None
    assert good.finish_reason == "length"
    assert_pool_whole(engine)


def test_a_mask_past_its_budget_ends_its_request_with_a_limit_error() -> None:
    engine = make_engine(max_mask_seconds=0.3)
    slow = grammars.compile(grammars.Regex(SLOW_REGEX))
    bad, good = engine.generate([[5, 6], [7, 8]], [CONSTRAINED, GREEDY], constraints=[slow, None])
    assert bad.finish_reason == "error" and isinstance(bad.error, ConstraintLimitError)
    assert "time budget of 0.3 s" in str(bad.error)
    assert good.finish_reason == "length" and len(good.token_ids) == GREEDY.max_tokens
    assert_pool_whole(engine)


@pytest.mark.parametrize("value", [0, -1.0, "5", True])
def test_the_mask_budget_is_checked(value: object) -> None:
    with pytest.raises(RequestError) as error:
        make_engine(max_mask_seconds=value)
    assert error.value.field == "max_mask_seconds"


class _BlockingMatcher(_FailingMatcher):
    """A mask that takes until the test releases it."""

    def __init__(self, entered: threading.Event, release: threading.Event) -> None:
        super().__init__("", RuntimeError())
        self._entered, self._release = entered, release

    def mask(self, max_seconds: float | None = None, max_remaining_tokens: int | None = None) -> torch.Tensor:
        self._entered.set()
        self._release.wait()
        return super().mask()


class _BlockingConstraint:
    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()

    def matcher(self, vocab: object) -> _BlockingMatcher:
        return _BlockingMatcher(self.entered, self.release)


def test_add_and_abort_return_while_a_slow_mask_is_being_computed() -> None:
    engine = make_engine()
    constraint = _BlockingConstraint()
    slow = engine.add_request([5, 6], GREEDY.replace(ignore_eos=False), constraint)
    other = engine.add_request([7, 8], GREEDY)
    stepper = threading.Thread(target=engine.step)
    stepper.start()
    try:
        assert constraint.entered.wait(timeout=30)
        results: list[object] = []
        caller = threading.Thread(target=lambda: results.extend([engine.abort_request(other), engine.add_request([9])]))
        caller.start()
        caller.join(timeout=30)
        # The mask is still blocked: abort and add went through without waiting for it.
        assert not caller.is_alive() and not constraint.release.is_set()
        assert results[0] is True
    finally:
        constraint.release.set()
        stepper.join()
    engine.abort_request(slow)
    engine.abort_request(str(results[1]))
    assert_pool_whole(engine)
