"""Mask timing: the wrapped matcher times its work, forks share the clock."""

from __future__ import annotations

import grammars
from sdk.timing import MaskClock, TimedConstraint
from tests.runtime.fakes import smollm2_tokenizer


def test_timed_matchers_add_their_work_to_one_clock_and_behave_like_the_inner_one() -> None:
    vocab = grammars.Vocabulary.from_tokenizer(smollm2_tokenizer())
    constraint = grammars.compile(grammars.Regex("ab|ac"))
    clock = MaskClock()
    matcher = TimedConstraint(constraint, clock).matcher(vocab)
    plain = constraint.matcher(vocab)
    a_id = smollm2_tokenizer().encode("a")[0]
    assert bool(matcher.mask()[a_id]) and matcher.error is None
    matcher.advance(a_id)
    plain.advance(a_id)
    twin = matcher.fork()
    before = clock.seconds
    assert twin.mask().equal(plain.mask())
    assert clock.seconds > before > 0.0
    assert not twin.is_accepting()
    matcher.advance(smollm2_tokenizer().encode("b")[0])
    assert matcher.is_accepting() and not twin.is_accepting()
