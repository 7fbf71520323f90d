"""Fuzzing every front end: whatever the specification, `compile`, `accepts` and a few mask/advance
steps on the real SmolLM2 vocabulary either succeed or raise a `GrammarError`, within bounded time
and memory. Nothing else is asserted: this suite looks for raw exceptions, hangs and blow-ups.

Short and repeatable in a default run; `pytest -m fuzz` runs the same tests long (see
`fuzz_strategies.register_fuzz_profile`).
"""

from __future__ import annotations

import resource
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import grammars
from grammars.errors import GrammarError
from tests.grammars import fuzz_strategies as fs

#: Huge enums and choices make long reprs, which Hypothesis warns about; they are the point here.
pytestmark = [pytest.mark.fuzz, pytest.mark.filterwarnings("ignore:Generating overly large repr")]

#: Wall-clock bound of one example. Compiling may take the schema front end's and the core's
#: 10 s budgets in turn (grammars/core/budget.py); each of the few masks is given MAX_MASK_SECONDS.
MAX_EXAMPLE_SECONDS = 30.0
#: Budget of each mask, as the engine passes its `max_mask_seconds`.
MAX_MASK_SECONDS = 2.0
#: Growth of the process' peak resident memory one example may cause.
MAX_EXAMPLE_RSS_GROWTH = 1 << 30
#: Choices of the allowed token to advance by, one per step.
token_picks = st.lists(st.integers(0, 2**16), max_size=4)


class ExampleTimeout(BaseException):
    """One example ran past MAX_EXAMPLE_SECONDS.

    A BaseException, so no `except Exception` in the code under test can swallow it, and Hypothesis
    does not spend minutes shrinking a hang: the message names the input instead.
    """


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports kilobytes


@contextmanager
def bounded(what: object) -> Iterator[None]:
    """Fail when the block runs past MAX_EXAMPLE_SECONDS (interrupting it) or grows the peak RSS by
    more than MAX_EXAMPLE_RSS_GROWTH."""
    can_alarm = threading.current_thread() is threading.main_thread()

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise ExampleTimeout(f"no answer within {MAX_EXAMPLE_SECONDS:g} s for {what!r:.2000}")

    if can_alarm:
        previous = signal.signal(signal.SIGALRM, interrupt)
        signal.setitimer(signal.ITIMER_REAL, MAX_EXAMPLE_SECONDS)
    rss_before, started = _peak_rss_bytes(), time.monotonic()
    try:
        yield
    finally:
        if can_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    elapsed, growth = time.monotonic() - started, _peak_rss_bytes() - rss_before
    assert elapsed <= MAX_EXAMPLE_SECONDS, f"took {elapsed:.1f} s"
    assert growth <= MAX_EXAMPLE_RSS_GROWTH, f"peak RSS grew by {growth >> 20} MiB"


def exercise(
    make_spec: Callable[[], Any], vocab: grammars.Vocabulary, texts: list[str], picks: list[int], lenient: bool
) -> None:
    """Build the specification, compile it, ask `accepts` about `texts`, then take one mask/advance
    step per pick; a GrammarError anywhere ends the example, which is a pass."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lenient compiles warn about every keyword they drop
        try:
            constraint = grammars.compile(make_spec(), lenient=lenient, cache=False)
            for text in texts:
                constraint.accepts(text)
            matcher = constraint.matcher(vocab)
            for pick in picks:
                allowed_ids = matcher.mask(MAX_MASK_SECONDS).nonzero().flatten()
                if matcher.error is not None or len(allowed_ids) == 0:
                    return
                matcher.advance(int(allowed_ids[pick % len(allowed_ids)]))
        except GrammarError:
            return


@settings(settings.get_profile(fs.FUZZ_PROFILE))
@given(schema=fs.schemas, texts=fs.sample_texts, picks=token_picks, lenient=st.booleans())
def test_json_schemas(
    vocab: grammars.Vocabulary, schema: Any, texts: list[str], picks: list[int], lenient: bool
) -> None:
    with bounded(schema):
        exercise(lambda: schema.build() if isinstance(schema, fs.Deep) else schema, vocab, texts, picks, lenient)


@settings(settings.get_profile(fs.FUZZ_PROFILE))
@given(spec=fs.regex_specs, texts=fs.sample_texts, picks=token_picks)
def test_regexes(vocab: grammars.Vocabulary, spec: grammars.Regex, texts: list[str], picks: list[int]) -> None:
    with bounded(spec):
        exercise(lambda: spec, vocab, texts, picks, lenient=False)


@settings(settings.get_profile(fs.FUZZ_PROFILE))
@given(spec=fs.lark_specs, texts=fs.sample_texts, picks=token_picks)
def test_lark_grammars(vocab: grammars.Vocabulary, spec: grammars.Lark, texts: list[str], picks: list[int]) -> None:
    with bounded(spec):
        exercise(lambda: spec, vocab, texts, picks, lenient=False)


@settings(settings.get_profile(fs.FUZZ_PROFILE))
@given(options=fs.choice_options, texts=fs.sample_texts, picks=token_picks)
def test_choices(vocab: grammars.Vocabulary, options: list[Any], texts: list[str], picks: list[int]) -> None:
    with bounded(options):
        exercise(lambda: grammars.Choice(options), vocab, [*map(str, options[:3]), *texts], picks, lenient=False)
