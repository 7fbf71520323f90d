"""Reasoning, then answer: free text first, and the constraint only on the final answer.

With `reasoning=True` the model writes its reasoning in its own words, then `MARKER`, then the answer
in the output's language. One grammar covers the whole completion (`grammars.compose`): the reasoning
cannot contain the marker, so the first marker is where the answer starts, and the answer is as
constrained as without reasoning. The prompt asks for this layout (`INSTRUCTION`).

Small models often never write the marker: they repeat "The answer is 7." until `max_tokens`. So the
reasoning has a token budget: when a sequence has spent it without writing the marker, its matcher
switches to "marker, then answer" (`grammars.compose.marker_then_answer`), which makes the model
close its reasoning and answer. Each sequence (sample, beam) counts its own budget.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import TYPE_CHECKING, Any

from grammars.compiler import Constraint
from grammars.compose import marker_then_answer, reasoning_then_answer
from grammars.errors import GrammarError, RollbackError
from grammars.masking.matcher import MAX_ROLLBACK_TOKENS
from runtime.engine.constraints import TokenMatcher
from sdk.outputs import OutputSpec

if TYPE_CHECKING:
    from collections.abc import Sequence

    import torch

__all__ = ["INSTRUCTION", "MARKER", "SEPARATOR", "BudgetedReasoning", "join", "reasoning_constraint", "split"]

#: Ends the reasoning; the answer follows. A line of its own, so it never splits a sentence.
MARKER = "\nAnswer:"
#: The optional text between the marker and the answer.
SEPARATOR = " "
#: What the prompt asks for when reasoning is on.
INSTRUCTION = (
    "First think step by step in plain sentences. "
    'Then write "Answer:" on a new line, followed by the final answer and nothing else.'
)
_MARKER_BYTES = MARKER.encode("utf-8")

_cache: dict[int, tuple[OutputSpec, Constraint, Constraint]] = {}
_cache_lock = threading.Lock()


def _constraints(spec: OutputSpec) -> tuple[Constraint, Constraint]:
    """(reasoning + marker + answer, marker + answer) for an output, cached per output."""
    found = _cache.get(id(spec))
    if found is not None and found[0] is spec:
        return found[1], found[2]
    free = reasoning_then_answer(spec.constraint, MARKER, separator=SEPARATOR)
    forced = marker_then_answer(spec.constraint, MARKER, separator=SEPARATOR)
    with _cache_lock:
        _cache[id(spec)] = (spec, free, forced)  # the spec is kept alive, so its id is never reused
    return free, forced


def reasoning_constraint(spec: OutputSpec) -> Constraint:
    """The constraint "reasoning, marker, answer" for an output, without a budget (cached).

    Raises:
        grammars.GrammarError: the answer's grammar cannot be composed.
    """
    return _constraints(spec)[0]


class BudgetedReasoning:
    """The reasoning constraint of an output with a token budget on the reasoning.

    Args:
        spec: the output the answer must be a value of.
        max_reasoning_tokens: tokens a sequence may reason before the marker is forced.

    Raises:
        grammars.GrammarError: the answer's grammar cannot be composed.
    """

    def __init__(self, spec: OutputSpec, max_reasoning_tokens: int) -> None:
        self.free, self.forced = _constraints(spec)
        self.max_reasoning_tokens = max_reasoning_tokens

    def accepts(self, text: str) -> bool:
        """Whether `text` is reasoning, the marker and an answer (the budget does not change that)."""
        return self.free.accepts(text)

    def matcher(self, vocab: Any) -> TokenMatcher:
        """A matcher that follows the free constraint until the budget is spent, then the forced one."""
        return _BudgetedMatcher(self, vocab, self.free.matcher(vocab))


class _BudgetedMatcher:
    """A runtime.engine.constraints.TokenMatcher over `BudgetedReasoning`.

    State: the tail of the text that could be the start of the marker, whether the marker was
    written, and which matcher is in charge; per token advanced (for `rollback`), which matcher
    took it and that state before it.
    """

    def __init__(self, owner: BudgetedReasoning, vocab: Any, free: TokenMatcher) -> None:
        self._owner = owner
        self._vocab = vocab
        self._free = free
        self._forced: TokenMatcher | None = None
        self._num_free_tokens = 0
        self._tail = b""
        self._has_marker = False
        #: Per token advanced, oldest first: (whether the forced matcher took it, num_free_tokens, tail, has_marker).
        self._history: deque[tuple[bool, int, bytes, bool]] = deque(maxlen=MAX_ROLLBACK_TOKENS)

    @property
    def error(self) -> GrammarError | None:
        return self._active.error

    @property
    def _active(self) -> TokenMatcher:
        return self._forced if self._forced is not None else self._free

    def _switch_if_spent(self) -> None:
        """Hand over to the forced matcher once the budget is spent without the marker (the engine
        asks for a mask before each token, so every step goes through here first)."""
        if self._forced is None and not self._has_marker and self._num_free_tokens >= self._owner.max_reasoning_tokens:
            self._forced = self._owner.forced.matcher(self._vocab)

    def mask(self, max_seconds: float | None = None, max_remaining_tokens: int | None = None) -> torch.Tensor:
        self._switch_if_spent()
        return self._active.mask(max_seconds, max_remaining_tokens)

    def advance(self, token_id: int) -> None:
        self._active.advance(token_id)
        self._history.append((self._forced is not None, self._num_free_tokens, self._tail, self._has_marker))
        if self._forced is None:
            self._num_free_tokens += 1
            if not self._has_marker:
                data = self._tail + (self._vocab.token_bytes[token_id] or b"")
                self._has_marker = _MARKER_BYTES in data
                self._tail = data[-(len(_MARKER_BYTES) - 1) :]

    def is_accepting(self) -> bool:
        return self._active.is_accepting()

    def forced_bytes(self) -> bytes:
        self._switch_if_spent()
        return self._active.forced_bytes()

    def check_tokens(self, token_ids: Sequence[int]) -> int:
        self._switch_if_spent()
        if self._forced is not None or self._has_marker:
            return self._active.check_tokens(token_ids)
        # The budget may run out among the tokens: step a fork as the engine steps a sequence.
        twin = self.fork()
        for count, token_id in enumerate(token_ids):
            twin._switch_if_spent()
            try:
                twin.advance(token_id)
            except GrammarError:
                return count
        return len(token_ids)

    def rollback(self, num_tokens: int) -> None:
        if not 0 <= num_tokens <= len(self._history):
            raise RollbackError(
                f"cannot roll back {num_tokens} tokens: the matcher remembers the last {len(self._history)}"
            )
        if num_tokens == 0:
            return
        undone = list(self._history)[-num_tokens:]
        on_forced = sum(step[0] for step in undone)
        if self._forced is not None and on_forced:
            self._forced.rollback(on_forced)
        if on_forced < num_tokens:  # back into the reasoning: the budget is not spent there
            self._free.rollback(num_tokens - on_forced)
            self._forced = None
        for _ in undone:
            self._history.pop()
        _, self._num_free_tokens, self._tail, self._has_marker = undone[0]

    def fork(self) -> _BudgetedMatcher:
        twin = _BudgetedMatcher(self._owner, self._vocab, self._free.fork())
        twin._forced = self._forced.fork() if self._forced is not None else None
        twin._num_free_tokens, twin._tail, twin._has_marker = self._num_free_tokens, self._tail, self._has_marker
        twin._history = self._history.copy()
        return twin


def split(text: str) -> tuple[str, str | None]:
    """(reasoning, answer) of a completion; the answer is None when the marker never came."""
    reasoning, marker, answer = text.partition(MARKER)
    if not marker:
        return text, None
    return reasoning.strip(), answer.removeprefix(SEPARATOR)


def join(reasoning: str, answer: str) -> str:
    """The completion text for a reasoning and an answer (how few-shot examples show both)."""
    return f"{reasoning}{MARKER}{SEPARATOR}{answer}"
