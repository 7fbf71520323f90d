"""How often draft tokens are accepted, and what verifying them costs: the two sides of cutting a draft.

Each draft token has a kind (`DraftKind`: where it came from, how long its match), and each kind an
acceptance rate learnt from verification (`Acceptance`; a sequence's own counts drawn towards the
engine's, those towards the kind's prior: `kind_rate`); a draft's first token is scaled by how sure the
target was of the token before it (`confidence_level`, `confidence_factor`). A verified row costs a
fraction of a one-row step, fitted to the engine's timed passes (`RowCost`); `draft_length` weighs
the two and cuts the draft where a further token no longer pays for its row.
"""

from __future__ import annotations

import statistics
from collections import deque

from runtime.engine.draft_text import MAX_MATCH_BYTES

#: What a verified row is taken to cost (of a one-row step) until the engine's passes are timed
#: (measured on a 2-core CPU: 0.2-0.3 with SmolLM2-135M at 4 bits).
DEFAULT_ROW_COST = 0.3
#: Probabilities of the target's own token below which it was unsure of it, at or above which sure.
LOW_CONFIDENCE = 0.4
HIGH_CONFIDENCE = 0.85
#: A match this long (in bytes) is a copy in progress, which a token that ended copies before may end.
MIN_COPY_BYTES = 4


class DraftKind:
    """Draft token kinds, each with its own acceptance rate (see `Acceptance`)."""

    FORCED_FIRST = "forced-first"  # the first token of a run of forced text: the model may split it otherwise
    FORCED_WORD_FIRST = "forced-word-first"  # the same, where the forced text starts with a word (a key, an enum)
    FORCED = "forced"
    SPELLED_FIRST = "spelled-first"  # forced text as the sequence spelled it earlier (`earlier_spelling`)
    SPELLED = "spelled"
    SPLIT_FIRST = "split-first"  # forced text's first character alone (a model spelling a word it did not expect)
    SPACED_FIRST = "spaced-first"  # a space where white space may come, then the text forced after it
    COPY_END = "copy-end"  # a token that ended the sequence's copies before (`",`), drafted where a copy may end
    LOOKUP_BOUNDARY = "lookup-boundary"  # a looked-up token where the copied text's clause ends (`, `, `)`, a newline)
    MODELLED = "modelled"

    @staticmethod
    def forced(*, is_first: bool, is_spelled: bool, is_word: bool = False) -> str:
        """A forced token: the first of its run (of a run starting with a word) or not, an earlier
        spelling or the tokenizer's."""
        if is_spelled:
            return DraftKind.SPELLED_FIRST if is_first else DraftKind.SPELLED
        if not is_first:
            return DraftKind.FORCED
        return DraftKind.FORCED_WORD_FIRST if is_word else DraftKind.FORCED_FIRST

    @staticmethod
    def lookup(match_bytes: int, is_first: bool) -> str:
        """A looked-up token, by how long the match behind it is (in powers of two of bytes)."""
        return f"lookup-{min(match_bytes, MAX_MATCH_BYTES).bit_length()}{'-first' if is_first else ''}"

    @staticmethod
    def is_copy(kind: str) -> bool:
        """Whether `kind` is a looked-up token of a copy in progress (a match of `MIN_COPY_BYTES` or more)."""
        if kind == DraftKind.LOOKUP_BOUNDARY:
            return True
        return kind.startswith("lookup-") and int(kind.split("-")[1]) >= MIN_COPY_BYTES.bit_length()

    @staticmethod
    def prior_rate(kind: str) -> float:
        """`kind`'s acceptance rate before any of its tokens was verified (see `_PRIOR_RATES`)."""
        if kind in _PRIOR_RATES:
            return _PRIOR_RATES[kind]
        return 0.5 + 0.05 * int(kind.split("-")[1])


#: What a kind's acceptance rate is taken to be before any of its tokens was verified (a looked-up
#: token: the likelier the longer its match, 0.55 for one byte up to 0.95 for `MAX_MATCH_BYTES`).
_PRIOR_RATES = {
    DraftKind.FORCED_FIRST: 0.7,
    DraftKind.FORCED_WORD_FIRST: 0.7,
    DraftKind.FORCED: 0.9,
    DraftKind.SPELLED_FIRST: 0.8,
    DraftKind.SPELLED: 0.9,
    DraftKind.SPLIT_FIRST: 0.5,
    DraftKind.SPACED_FIRST: 0.5,
    DraftKind.COPY_END: 0.6,
    DraftKind.LOOKUP_BOUNDARY: 0.4,
    DraftKind.MODELLED: 0.5,
}
#: What a draft's first token's acceptance rate is taken to be before any was verified.
_FIRST_TOKEN_PRIOR = 0.6
#: Weight (in verified tokens) of the prior in the engine's rate, and of the engine's rate in a sequence's.
_PRIOR_WEIGHT = 4.0
_ENGINE_WEIGHT = 4.0
#: Per verification, the engine's counts fade by this factor, so its rates follow the workload and a
#: kind no longer drafted drifts back to its prior (and is tried again).
_FADE = 0.995


class Acceptance:
    """How often draft tokens of each kind are accepted when verification reaches them: counts of one
    sequence, or of the whole engine (faded)."""

    def __init__(self) -> None:
        self.accepted: dict[str, float] = {}
        self.reached: dict[str, float] = {}

    def record(self, kinds: list[str], num_accepted: int) -> None:
        """Count a verified draft: its first `num_accepted` tokens accepted, the next one rejected."""
        for index, kind in enumerate(kinds[: num_accepted + 1]):
            self.record_one(kind, index < num_accepted)

    def record_one(self, kind: str, is_accepted: bool) -> None:
        """Count one token of `kind` that verification reached."""
        self.reached[kind] = self.reached.get(kind, 0.0) + 1.0
        self.accepted[kind] = self.accepted.get(kind, 0.0) + float(is_accepted)

    def fade(self) -> None:
        for counts in (self.accepted, self.reached):
            for kind in counts:
                counts[kind] *= _FADE

    def rate(self, kind: str, prior: float, weight: float) -> float:
        """The acceptance rate of `kind`, `prior` counting as `weight` verified tokens."""
        return (self.accepted.get(kind, 0.0) + prior * weight) / (self.reached.get(kind, 0.0) + weight)


def kind_rate(engine: Acceptance, own: Acceptance, kind: str) -> float:
    """The chance a draft token of `kind` is accepted: a sequence's own rate (`own`), drawn towards the
    engine's (`engine`), itself drawn towards the kind's prior."""
    engine_rate = engine.rate(kind, DraftKind.prior_rate(kind), _PRIOR_WEIGHT)
    return own.rate(kind, engine_rate, _ENGINE_WEIGHT)


def confidence_factor(first_tokens: Acceptance, level: str) -> float:
    """How much likelier than a draft's first token in general one is accepted after a token the
    target was this sure of (`confidence_level`; `first_tokens` counts first tokens in all, "all",
    and after each level)."""
    overall = first_tokens.rate("all", _FIRST_TOKEN_PRIOR, _PRIOR_WEIGHT)
    return first_tokens.rate(level, overall, _PRIOR_WEIGHT) / overall


def confidence_level(probability: float) -> str:
    """How sure the target was of a token it produced, in three levels: a draft after a token the
    target was unsure of (a value's first word, a hallucination) is accepted far less often than one
    after a token it was sure of (mid-copy, structure)."""
    if probability < LOW_CONFIDENCE:
        return "low"
    return "high" if probability >= HIGH_CONFIDENCE else "mid"


class RowCost:
    """What one more row costs a decode or verify pass, as a fraction of a one-row pass, fitted to the
    passes the engine times: per row count (counts past `EXACT_ROWS` share a bucket per power of
    two), the medians of its recent passes' rows and seconds (a pass slowed by cold masks or a busy
    machine does not move them; a least-squares fit over every pass once read 0.9 for the ~100
    passes after a new constraint's first masks, and drafting stopped), then the line
    seconds = a + b * rows through those medians, weighted by their counts; cost = b / (a + b).
    Until two buckets have `MIN_PASSES` passes each, `guess`; with `is_fixed`, always `guess`."""

    #: Recent passes remembered per bucket (older ones drop out, so the fit follows the machine).
    WINDOW = 31
    #: Passes a bucket needs before its medians count in the fit.
    MIN_PASSES = 3
    #: Row counts up to this one have a bucket each (a single sequence's drafts).
    EXACT_ROWS = 8
    #: Fitted costs are kept within these bounds (a noisy fit must neither stop drafting nor run wild).
    BOUNDS = (0.02, 0.9)

    def __init__(self, guess: float, *, is_fixed: bool = False) -> None:
        self.guess = guess
        self.is_fixed = is_fixed
        self._passes: dict[int, deque[tuple[int, float]]] = {}  # by bucket: (rows, seconds)
        #: By bucket with `MIN_PASSES` passes: (median rows, median seconds, passes), until its next pass.
        self._medians: dict[int, tuple[float, float, int]] = {}
        self._value: float | None = None  # the fit, until the next observation

    def observe(self, num_rows: int, seconds: float) -> None:
        """Count one timed pass of `num_rows` rows."""
        bucket = num_rows if num_rows <= self.EXACT_ROWS else self.EXACT_ROWS + (num_rows - 1).bit_length()
        if bucket not in self._passes:
            self._passes[bucket] = deque(maxlen=self.WINDOW)
        self._passes[bucket].append((num_rows, seconds))
        self._medians.pop(bucket, None)
        self._value = None

    @property
    def value(self) -> float:
        if self._value is None:
            self._value = self.guess if self.is_fixed else self._fit()
        return self._value

    def _fit(self) -> float:
        for bucket, passes in self._passes.items():
            if bucket not in self._medians and len(passes) >= self.MIN_PASSES:
                rows, seconds = statistics.median(r for r, _ in passes), statistics.median(s for _, s in passes)
                self._medians[bucket] = (rows, seconds, len(passes))
        points = list(self._medians.values())
        if len(points) < 2:
            return self.guess
        weight = sum(count for _, _, count in points)
        mean_rows = sum(rows * count for rows, _, count in points) / weight
        mean_seconds = sum(seconds * count for _, seconds, count in points) / weight
        spread = sum(count * (rows - mean_rows) ** 2 for rows, _, count in points)
        if spread <= 0.0:
            return self.guess
        slope = sum(count * (rows - mean_rows) * (seconds - mean_seconds) for rows, seconds, count in points) / spread
        one_row = mean_seconds + slope * (1 - mean_rows)
        if one_row <= 0.0:
            return self.guess
        low, high = self.BOUNDS
        return min(high, max(low, slope / one_row))

    def per_sequence(self, num_seqs: int) -> float:
        """What one more row costs as a fraction of one sequence's share of a pass that `num_seqs`
        sequences share (a pass's fixed cost is split among them; its rows are not)."""
        cost = self.value
        return cost * num_seqs / (1.0 - cost + cost * num_seqs)


def draft_length(rates: list[float], row_cost: float) -> int:
    """How many leading draft tokens to verify: the count that maximizes the expected tokens a step
    produces per unit of its cost, `rates[i]` being the chance token i is accepted once those before
    it were, a verified row costing `row_cost` of a one-row step (the step's own token costs 1)."""
    best_length, best_value = 0, 1.0
    expected, reached = 1.0, 1.0
    for length, rate in enumerate(rates, start=1):
        reached *= rate
        expected += reached
        value = expected / (1.0 + row_cost * length)
        if value > best_value:
            best_length, best_value = length, value
    return best_length
