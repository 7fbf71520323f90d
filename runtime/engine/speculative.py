"""Speculative decoding and jump-forward: drafts proposed, checked against the constraint, verified in one pass.

Jump-forward is speculation with the grammar as the draft source. Each decode step a sequence may
carry a draft of up to `num_draft_tokens` tokens, built in turns, the source chosen at each point:

- the constraint (`jump_forward`), wherever it forces bytes (`{"name": "`, a closing `"}`, an enum
  tail, the next key): those bytes as the model is likeliest to write them: where the sequence
  wrote a prefix of them before, token-aligned, in the tokens it wrote it in (a model that wrote a
  key's `firmware` as `f` `irm` `ware` writes it so again, where the tokenizer has `firm` `ware`:
  `earlier_spelling`), the rest encoded by the tokenizer. Where forced text starts, the tokenizer's
  spelling and, for text starting a word, the word's first letter alone (`s` `hift`: a model
  spelling a key it did not expect) are weighed too, the spelling whose kind is accepted most often
  drafted; where only white space may come first, a space and the text forced after it (` "` `b`);
- prompt lookup (`prompt_lookup`) elsewhere: the text that followed the latest earlier occurrence
  of the longest suffix of the sequence's text (prompt, output and draft so far), matched as bytes
  (an answer's `"Margaret` matches a document's ` Margaret` token) and drafted as the tokens that
  stood there (a copy is written as it was read); it stops where the constraint forces text, which
  then takes over (a copied value, then `", "`, then the next key). Where the copied text's clause
  ends (`, `, `) `, a line break: `ends_clause`) or the constraint refuses the copy, the copy going on
  is weighed against a token that ended the sequence's copies before (`",`), so one verification
  covers a value, its end and the next key. With a draft model, lookup
  drafts only after a match of `MODEL_FREE_MATCH_BYTES` (a copied span), else the model drafts;
- a draft model (`draft_model`, or the target's own early layers with `self_draft_layers`; see
  runtime.engine.draft_model): it decodes the rest, one batched pass per token over every drafting
  sequence, each step under the sequence's mask, penalties, temperature and truncation, greedy when
  the request is, else sampled from that processed distribution q (end-of-text and stop tokens get
  q = 0: the draft never ends a text, the target does).

Every draft is walked through a fork of the sequence's matcher (the real matcher never sees it): each
position's mask (the one the plain step would use there: its budget, the runaway guard's closing
mask) is kept, and a token the mask forbids ends the draft. The target then scores the last token and
the draft in one (k+1)-token forward; position i's logits go through that position's mask and the
request's penalties, temperature and truncation, exactly as a plain step's would, giving p_i. The
standard rejection rule then accepts a prefix:

    greedy:  accept draft token x while x is the argmax; the first argmax that differs is the output;
    sampled: accept x with probability min(1, p(x) / q(x)); on rejection draw from max(0, p - q),
             renormalized; after k acceptances one more token is drawn from p_k (the bonus token).

Forced and looked-up tokens are deterministic functions of the context: their q is one-hot, so
accepting is a coin of p(x) and the residual is p with x removed. So greedy output is the plain output
token for token and sampled output has the plain distribution, given the same logits (and masks that
always leave the constraint a way on, which they do barring a matcher error). The logits are the
same: with the compiled kernels (`runtime.model.kernels`) a decode or verify pass is batch invariant,
so a verification row is bitwise the one-token decode step of that position, and greedy output is
the plain output exactly (tested on 50 SmolLM2 prompts in the default bfloat16 4-bit mode). Where
torch's matmuls run instead (float32, unquantized models, no compiled kernels) a row rounds by the
pass's row count, so the guarantee there holds up to rounding: a near-tie can flip.
The engine then appends the accepted tokens through the normal path (matcher, detokenizer, stop
strings, limits), keeps the KV of the accepted positions and frees the blocks past them. Off for
beam search.

Cost-aware, adaptive length: a verified row is not free (about 0.2-0.3 of a one-row step on a 2-core
CPU), and a rejected token wastes its row and every row after it. Each draft token has a kind (the
first token of a forced run, which the model often splits otherwise, e.g. ` "s` `h` `ift` for
`"shift`; a later forced token; both again for forced text spelled as before; a looked-up token, by
the length of its match; a modelled token), and each kind an acceptance rate learnt from
verification: the sequence's own counts drawn towards the engine's (faded, so they follow the
workload); the alternatives weighed and not drafted are counted too, from what verification found
there. A draft's first token is likelier accepted after a token the target was sure of (mid-copy,
structure) than after one it was not (a value's first word): its rate is scaled by the level of the
target's probability for the token before it (`confidence_level`), learnt per level. The draft is
then cut to the length that maximizes expected tokens per unit of step cost
(`draft_length`), the row cost fitted to the medians of the engine's timed passes (`RowCost`) and
weighed against one sequence's share of a batched pass; a draft whose first token does not pay is
not made. The draft model keeps its own allowance: doubled (to `num_draft_tokens`) while its tokens
are accepted whole, one past the accepted count when not.
"""

from __future__ import annotations

import bisect
import codecs
import os
import statistics
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from runtime.engine.runaway import MAX_PERIOD, closing_mask, ends_in_loop
from runtime.engine.sampler import apply_token_penalties, argmax_rows, sample_from_probs, sampling_probs
from runtime.errors import RequestError

if TYPE_CHECKING:
    from runtime.engine.draft_model import DraftModel
    from runtime.engine.llm_engine import Engine
    from runtime.engine.sampling_params import SamplingParams
    from runtime.engine.sequence import Sequence
    from runtime.tokenizer import Tokenizer

#: Most forced bytes one jump-forward reads ahead (a long key or enum tail fits; the draft caps it anyway).
MAX_FORCED_BYTES = 64
#: Longest context end, in bytes, that prompt lookup matches (longer matches say little more).
MAX_MATCH_BYTES = 256
#: What a verified row is taken to cost (of a one-row step) until the engine's passes are timed
#: (measured on a 2-core CPU: 0.2-0.3 with SmolLM2-135M at 4 bits).
DEFAULT_ROW_COST = 0.3
#: With a draft model, lookup drafts only after a match this long (a copied span); else the model drafts.
MODEL_FREE_MATCH_BYTES = 16
#: Earlier occurrences of forced text's first bytes that `earlier_spelling` weighs, the latest first.
MAX_SPELLING_CANDIDATES = 32
#: Forced and looked-up encodings kept before the cache is cleared.
MAX_CACHED_ENCODINGS = 4096
#: Probabilities of the target's own token below which it was unsure of it, at or above which sure.
LOW_CONFIDENCE = 0.4
HIGH_CONFIDENCE = 0.85
#: A match this long (in bytes) is a copy in progress, which a token that ended copies before may end.
MIN_COPY_BYTES = 4
#: Tokens that ended copies (`Speculator._copy_ends`) remembered; the least counted goes first.
MAX_COPY_ENDS = 16
#: Bytes that end a clause of copied text when white space follows them (`, `, `) `, `. `).
CLAUSE_END_BYTES = frozenset(b",;:)]}.!?")


@dataclass(frozen=True, kw_only=True)
class SpeculativeConfig:
    """Which draft sources the engine uses, and how far it drafts.

    Attributes:
        num_draft_tokens: most draft tokens per sequence per step (>= 1).
        jump_forward: draft the text the constraint forces next.
        prompt_lookup: draft the text that followed the longest earlier occurrence of the context's
            end, in the prompt or the output so far (extraction copies spans).
        verify_row_cost: what one more verified row costs, as a fraction of a one-row decode step;
            drafts are cut where a further token's chance of being accepted no longer pays for its
            row. None: fitted to the engine's timed passes (`RowCost`), `DEFAULT_ROW_COST` until they
            tell; a number in [0, 1): that cost, fixed (0: rows are free, every draft is verified whole).
        draft_model: a smaller model with the same tokenizer that drafts the rest: a `.gguf` file or a
            Hugging Face folder (loaded with `runtime.load`'s defaults), or a loaded `Engine` whose
            model it uses (with a KV pool of its own). None: no draft model.
        self_draft_layers: draft with the model's own first n layers and its head (self-speculation;
            weights shared, KV pool of n layers). Exact, but it never paid on SmolLM2 on a 2-core CPU
            (benchmarks/speculative.py, n = 4, 8, 12 of 30: 5-16% of drafts accepted, 0.24-1.02x the
            tokens/s of plain decoding): an early exit never trained as one rarely agrees with the model.
            Kept as an option because it costs no memory for weights and stays exact.

    Raises:
        RequestError: a value out of range, both draft models, or no draft source (field names it).
    """

    num_draft_tokens: int = 6
    jump_forward: bool = True
    prompt_lookup: bool = True
    verify_row_cost: float | None = None
    draft_model: str | os.PathLike[str] | Engine | None = None
    self_draft_layers: int | None = None

    def __post_init__(self) -> None:
        value = self.num_draft_tokens
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RequestError(f"must be an int >= 1, got {value!r}", "num_draft_tokens")
        cost = self.verify_row_cost
        if cost is not None and (isinstance(cost, bool) or not isinstance(cost, int | float) or not 0 <= cost < 1):
            raise RequestError(f"must be None or a number in [0, 1), got {cost!r}", "verify_row_cost")
        layers = self.self_draft_layers
        if layers is not None and (isinstance(layers, bool) or not isinstance(layers, int) or layers < 1):
            raise RequestError(f"must be None or an int >= 1, got {layers!r}", "self_draft_layers")
        if layers is not None and self.draft_model is not None:
            raise RequestError("a draft model or self-speculation, not both", "self_draft_layers")
        if not (self.jump_forward or self.prompt_lookup or self.has_draft_model):
            raise RequestError("needs at least one draft source", "speculative")

    @property
    def has_draft_model(self) -> bool:
        """Whether a model (another one, or the target's early layers) drafts."""
        return self.draft_model is not None or self.self_draft_layers is not None


@dataclass
class Draft:
    """A checked draft of one sequence: forced, looked-up and modelled tokens.

    Attributes:
        token_ids: the draft tokens (k >= 1), each allowed by the constraint where it stands.
        masks: k + 1 masks (bool [V]) for positions 0..k, or None for an unconstrained sequence.
        kinds: where each token came from (`_Kind`), to learn how often each kind is accepted.
        confidence: how sure the target was of the token before the draft (`confidence_level`).
        num_modelled: how many trailing tokens came from the draft model.
        probs: float32 [num_modelled, V]: the distribution q each modelled token was sampled from;
            None when every token is a deterministic function of the context (q one-hot).
        alternatives: (position, kind, token id) of the tokens weighed against the drafted one there
            and not drafted; verification tells whether each would have been accepted, so the kinds
            not chosen keep learning.
    """

    token_ids: list[int]
    masks: list[torch.Tensor] | None
    kinds: list[str]
    confidence: str = "unknown"
    num_modelled: int = 0
    probs: torch.Tensor | None = None
    alternatives: list[tuple[int, str, int]] = field(default_factory=list)

    def draft_probs(self, index: int) -> torch.Tensor | None:
        """q at draft position `index` (float32 [V]), None where it is one-hot."""
        first_modelled = len(self.token_ids) - self.num_modelled
        if self.probs is None or index < first_modelled:
            return None
        return self.probs[index - first_modelled]


class _Kind:
    """Draft token kinds, each with its own acceptance rate (see `_Acceptance`)."""

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
            return _Kind.SPELLED_FIRST if is_first else _Kind.SPELLED
        if not is_first:
            return _Kind.FORCED
        return _Kind.FORCED_WORD_FIRST if is_word else _Kind.FORCED_FIRST

    @staticmethod
    def lookup(match_bytes: int, is_first: bool) -> str:
        """A looked-up token, by how long the match behind it is (in powers of two of bytes)."""
        return f"lookup-{min(match_bytes, MAX_MATCH_BYTES).bit_length()}{'-first' if is_first else ''}"

    @staticmethod
    def is_copy(kind: str) -> bool:
        """Whether `kind` is a looked-up token of a copy in progress (a match of `MIN_COPY_BYTES` or more)."""
        if kind == _Kind.LOOKUP_BOUNDARY:
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
    _Kind.FORCED_FIRST: 0.7,
    _Kind.FORCED_WORD_FIRST: 0.7,
    _Kind.FORCED: 0.9,
    _Kind.SPELLED_FIRST: 0.8,
    _Kind.SPELLED: 0.9,
    _Kind.SPLIT_FIRST: 0.5,
    _Kind.SPACED_FIRST: 0.5,
    _Kind.COPY_END: 0.6,
    _Kind.LOOKUP_BOUNDARY: 0.4,
    _Kind.MODELLED: 0.5,
}
#: What a draft's first token's acceptance rate is taken to be before any was verified.
_FIRST_TOKEN_PRIOR = 0.6
#: Weight (in verified tokens) of the prior in the engine's rate, and of the engine's rate in a sequence's.
_PRIOR_WEIGHT = 4.0
_ENGINE_WEIGHT = 4.0
#: Per verification, the engine's counts fade by this factor, so its rates follow the workload and a
#: kind no longer drafted drifts back to its prior (and is tried again).
_FADE = 0.995


class _Acceptance:
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


@dataclass(eq=False)
class _History:
    """What a sequence's lookups read: the bytes of its tokens so far, where each token ends in them,
    and its own acceptance counts."""

    num_tokens: int = 0
    text: bytearray = field(default_factory=bytearray)
    ends: list[int] = field(default_factory=list)
    acceptance: _Acceptance = field(default_factory=_Acceptance)
    #: How sure the target was of its own token at the end of the last verification (`confidence_level`),
    #: and the token count it ended at (the level holds only for the step right after it).
    confidence: str = "unknown"
    confidence_at: int = -1


def confidence_level(probability: float) -> str:
    """How sure the target was of a token it produced, in three levels: a draft after a token the
    target was unsure of (a value's first word, a hallucination) is accepted far less often than one
    after a token it was sure of (mid-copy, structure)."""
    if probability < LOW_CONFIDENCE:
        return "low"
    return "high" if probability >= HIGH_CONFIDENCE else "mid"


def longest_earlier_match(text: bytes, max_bytes: int) -> tuple[int, int]:
    """The longest suffix of `text` (at most `max_bytes`) that also occurs ending earlier in it.

    Returns:
        (its length in bytes, where its latest earlier occurrence ends); (0, 0) when no byte recurs.
    """
    low, high, end = 0, min(max_bytes, len(text) - 1), 0
    while low < high:  # a suffix that recurs has every shorter suffix recurring too
        length = (low + high + 1) // 2
        start = text.rfind(text[-length:], 0, len(text) - 1)
        if start < 0:
            high = length - 1
        else:
            low, end = length, start + length
    return low, end


def ends_clause(text: bytes, start: int) -> bool:
    """Whether `text` ends a clause at byte `start`: a line break there, or a punctuation mark
    (`CLAUSE_END_BYTES`) followed by white space. A copy often ends there (`Verhoeven, switched`:
    the answer's name ends at the comma)."""
    if start >= len(text):
        return False
    byte = text[start]
    if byte in b"\r\n":
        return True
    return byte in CLAUSE_END_BYTES and start + 1 < len(text) and text[start + 1] in b" \t\r\n"


def is_punctuation(data: bytes) -> bool:
    """Whether `data` is ASCII punctuation only (`",`, `)`, `."`): what ends a copy, not what continues it."""
    return bool(data) and all(byte < 0x80 and not chr(byte).isalnum() and not chr(byte).isspace() for byte in data)


def earlier_spelling(text: bytes, ends: list[int], forced: bytes) -> tuple[int, int]:
    """Where `text` (its tokens ending at `ends`) spelled the longest prefix of `forced` before: among
    the latest `MAX_SPELLING_CANDIDATES` occurrences of its first two bytes that start a token, the one
    whose whole tokens cover the most of `forced` (the latest of equals).

    Returns:
        (the index of its first token, how many tokens cover the prefix); (0, 0) when none does.
    """
    probe = forced[:2]
    best_first, best_count, best_bytes = 0, 0, 0
    limit = len(text)
    for _ in range(MAX_SPELLING_CANDIDATES):
        start = text.rfind(probe, 0, limit)
        if start < 0:
            break
        limit = start + len(probe) - 1  # next: occurrences starting before this one
        first = bisect.bisect_right(ends, start)  # the token holding byte `start`
        if (ends[first - 1] if first else 0) != start:
            continue
        common = len(forced)
        if not text.startswith(forced, start):
            here = text[start : start + len(forced)]
            common = next((i for i, (a, b) in enumerate(zip(here, forced)) if a != b), len(here))
        count = bisect.bisect_right(ends, start + common, lo=first) - first  # tokens ending inside it
        covered = ends[first + count - 1] - start if count else 0
        if covered >= len(probe) and covered > best_bytes:  # a spelling of the probe's bytes at least
            best_first, best_count, best_bytes = first, count, covered
            if covered == len(forced):
                break
    return best_first, best_count


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


class _Walk:
    """A draft in the making: its tokens, walked through a fork of the sequence's matcher, and the mask
    at each position (k + 1 of them); closed at the first token that cannot join it."""

    def __init__(self, seq: Sequence, params: SamplingParams, budget: int, end_ids: frozenset[int]) -> None:
        self.seq, self.params, self.budget = seq, params, budget
        self.end_ids = (frozenset() if params.ignore_eos else end_ids) | frozenset(params.stop_token_ids)
        self.token_ids: list[int] = []
        self.kinds: list[str] = []
        self.alternatives: list[tuple[int, str, int]] = []
        self.confidence = "unknown"
        self.modelled_probs: list[torch.Tensor] = []
        self.num_modelled = 0
        self._matcher = seq.matcher
        self.masks: list[torch.Tensor] | None = None
        self.is_open = True
        if seq.matcher is not None:
            first = self._mask_after([])
            self.masks = [first] if first is not None else []
            self.is_open = first is not None

    @property
    def mask(self) -> torch.Tensor | None:
        """The mask of the next draft position (None: unconstrained)."""
        return self.masks[-1] if self.masks else None

    def forced_bytes(self) -> bytes:
        """The bytes the constraint forces after the draft so far (none for an unconstrained sequence)."""
        return self._matcher.forced_bytes() if self._matcher is not None and self.is_open else b""

    def forced_bytes_after(self, token_id: int) -> bytes:
        """The bytes the constraint would force after `token_id` (none where it may not stand next)."""
        if self._matcher is None or not self.allows(token_id):
            return b""
        probe = self._matcher.fork()
        probe.advance(token_id)
        return probe.forced_bytes() if probe.error is None else b""

    def allows(self, token_id: int) -> bool:
        """Whether `token_id` may stand next (the walk open, the mask allowing it, not an end token)."""
        if not self.is_open or token_id in self.end_ids:
            return False
        return self.masks is None or bool(self.masks[-1][token_id])

    def push(self, token_id: int, kind: str) -> bool:
        """Add a token if it may stand next; else close the walk. Returns whether it was added."""
        if not self.is_open or token_id in self.end_ids:
            self.is_open = False
            return False
        if self.masks is not None:
            if not bool(self.masks[-1][token_id]) or self._matcher is None:
                self.is_open = False
                return False
            if self._matcher is self.seq.matcher:
                self._matcher = self._matcher.fork()
            self._matcher.advance(token_id)
            mask = self._mask_after(self.token_ids + [token_id]) if self._matcher.error is None else None
            if mask is None:
                self.is_open = False
                return False
            self.masks.append(mask)
        self.token_ids.append(token_id)
        self.kinds.append(kind)
        return True

    def cut(self, length: int) -> None:
        """Keep the first `length` tokens and close the walk (its matcher stands past them)."""
        del self.token_ids[length:], self.kinds[length:]
        self.alternatives = [alternative for alternative in self.alternatives if alternative[0] < length]
        if self.masks is not None:
            del self.masks[length + 1 :]
        self.is_open = False

    def _mask_after(self, draft_ids: list[int]) -> torch.Tensor | None:
        """The mask the plain step would use after `draft_ids`, or None where the matcher failed
        (a mask that allows nothing is left to `push`, which it refuses, and `draft`)."""
        matcher = self._matcher
        if matcher is None:
            return None
        is_closing = self.params.runaway_guard and self._may_loop(draft_ids)
        if is_closing:
            is_closing = ends_in_loop(self.seq.token_ids + draft_ids, self.seq.num_prompt_tokens)
        remaining = self.budget - len(draft_ids)
        mask = closing_mask(matcher, remaining) if is_closing else matcher.mask(max_remaining_tokens=remaining)
        if matcher.error is not None or mask.dim() != 1 or mask.numel() == 0:
            return None
        return mask

    def _may_loop(self, draft_ids: list[int]) -> bool:
        """Whether the text after `draft_ids` may end in a loop (`ends_in_loop`): only if its last
        token recurs within the last `MAX_PERIOD` before it (a cheap test that rules most steps out)."""
        recent = self.seq.token_ids[-(MAX_PERIOD + 1) :] + draft_ids
        return recent[-1] in recent[-(MAX_PERIOD + 1) : -1]

    def draft(self) -> Draft | None:
        """The walk's draft, less trailing tokens after which the mask allows nothing (a mask a
        token was pushed through allows that token, so only the last one is checked: `any` over
        the vocabulary costs more than a draft token's other checks together)."""
        while self.token_ids and self.masks is not None and not bool(self.masks[-1].any()):
            self.cut(len(self.token_ids) - 1)
        if not self.token_ids:
            return None
        probs = torch.stack(self.modelled_probs) if self.modelled_probs else None
        return Draft(
            token_ids=self.token_ids,
            masks=self.masks,
            kinds=self.kinds,
            num_modelled=self.num_modelled,
            probs=probs,
            alternatives=self.alternatives,
            confidence=self.confidence,
        )


class Speculator:
    """Proposes, checks and verifies drafts for the engine (see the module docstring).

    Args:
        config: the draft sources and lengths.
        tokenizer: encodes forced and looked-up text, and gives each token's bytes.
        eos_token_ids: tokens a draft never contains unless the request ignores EOS (the plain step
            decides where a text ends).
        draft_model: the model that drafts after forced and looked-up text (see `draft_model_for`).
    """

    def __init__(
        self,
        config: SpeculativeConfig,
        tokenizer: Tokenizer,
        eos_token_ids: frozenset[int],
        draft_model: DraftModel | None = None,
    ) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.draft_model = draft_model
        self._eos_token_ids = eos_token_ids
        self._token_bytes = tokenizer.decoded_bytes
        self._histories: weakref.WeakKeyDictionary[Sequence, _History] = weakref.WeakKeyDictionary()
        self._acceptance = _Acceptance()
        #: How often a draft's first token is accepted, in all ("all") and after each confidence level.
        self._first_tokens = _Acceptance()
        #: Forced text and looked-up token rests, encoded (the same keys and punctuation recur).
        self._encodings: dict[bytes, tuple[int, ...]] = {}
        #: Tokens that ended copies (`",` after a copied value), by how often (`_learn_copy_end`).
        self._copy_ends: dict[int, int] = {}
        space = self._encode_whole_characters(b" ")
        self._space_id = space[0] if len(space) == 1 else None
        fixed_cost = config.verify_row_cost
        self.row_cost = RowCost(DEFAULT_ROW_COST if fixed_cost is None else fixed_cost, is_fixed=fixed_cost is not None)

    # Proposing

    def propose(self, seq: Sequence, params: SamplingParams, budget: int) -> Draft | None:
        """A checked draft for `seq`'s next step, or None (see `propose_batch`)."""
        return self.propose_batch([(seq, params, budget)]).get(seq.seq_id)

    def propose_batch(self, candidates: list[tuple[Sequence, SamplingParams, int]]) -> dict[int, Draft]:
        """Checked drafts of a decode step's sequences, by sequence id (those without one left out).

        Args:
            candidates: (sequence, its request's parameters, budget) triples: each sequence decoding
                (its last token not yet cached); the budget counts the tokens it may still produce,
                the next one included (the draft leaves room for one more).
        """
        walks: list[_Walk] = []
        modelled: list[tuple[_Walk, int]] = []
        row_cost = self.row_cost.per_sequence(len(candidates))
        for seq, params, budget in candidates:
            num_wanted = min(self.config.num_draft_tokens, budget - 1)
            if num_wanted < 1 or params.use_beam_search:
                continue
            walk = _Walk(seq, params, budget, self._eos_token_ids)
            walks.append(walk)
            self._draft_text(walk, num_wanted, row_cost)
            num_left = num_wanted - len(walk.token_ids)
            if self.draft_model is not None and walk.is_open and num_left > 0:
                modelled.append((walk, min(num_left, self.draft_model.allowance(seq))))
        if modelled:
            with torch.inference_mode():  # the draft runner returns inference tensors, edited in place
                self._draft_with_model(modelled)
        drafts = {walk.seq.seq_id: walk.draft() for walk in walks}
        return {seq_id: draft for seq_id, draft in drafts.items() if draft is not None}

    def _draft_text(self, walk: _Walk, num_wanted: int, row_cost: float) -> None:
        """Extend the walk with forced text where the constraint forces some, else with looked-up
        text, in turns, then cut it where further tokens no longer pay (`draft_length`); a cut walk is
        closed, an uncut one left open for the draft model."""
        history = self._history(walk.seq)
        is_forced_run = False
        while walk.is_open and len(walk.token_ids) < num_wanted:
            spellings = self._forced_spellings(history, walk, is_first=not is_forced_run)
            if spellings:
                self._push_likeliest(history, walk, spellings, num_wanted)
                is_forced_run = True
                continue
            is_forced_run = False
            if self.config.prompt_lookup and self._push_lookup(history, walk, num_wanted):
                continue
            if not self._push_spaced(history, walk, num_wanted):
                break
        rates = [self._rate(history, kind) for kind in walk.kinds]
        if rates:
            walk.confidence = history.confidence if history.confidence_at == len(walk.seq.token_ids) else "unknown"
            rates[0] = min(1.0, rates[0] * self._confidence_factor(walk.confidence))
        length = draft_length(rates, row_cost)
        if length < len(walk.token_ids):
            walk.cut(length)

    def _push_likeliest(
        self, history: _History, walk: _Walk, candidates: list[tuple[list[int], list[str]]], num_wanted: int
    ) -> None:
        """Push the candidate continuation (token ids, their kinds) whose first kind is likeliest to be
        accepted (the earliest of equals), as far as it goes within `num_wanted` tokens; the other
        candidates' first tokens are kept as alternatives, for verification to count."""
        chosen = max(candidates, key=lambda candidate: self._rate(history, candidate[1][0]))
        position, first = len(walk.token_ids), chosen[0][0]
        seen = {first}
        for token_ids, kinds in candidates:
            if token_ids[0] not in seen:
                seen.add(token_ids[0])
                walk.alternatives.append((position, kinds[0], token_ids[0]))
        for token_id, kind in zip(chosen[0][: num_wanted - position], chosen[1]):
            if not walk.push(token_id, kind):
                break

    def _push_lookup(self, history: _History, walk: _Walk, num_wanted: int) -> bool:
        """Push looked-up tokens (`_lookup`) up to the text the constraint forces next, or up to where
        the copied text's clause ends (or the constraint refuses the copy): there, the looked-up token
        or a token that ended the sequence's copies before (`_copy_end`), the likelier. Returns
        whether anything was pushed."""
        looked_up, match_bytes, boundary = self._lookup(history, walk, num_wanted - len(walk.token_ids))
        if not looked_up or (self.draft_model is not None and match_bytes < MODEL_FREE_MATCH_BYTES):
            return False
        num_before = len(walk.token_ids)
        for index, token_id in enumerate(looked_up):
            is_allowed = walk.allows(token_id)
            if index == boundary or not is_allowed:
                choices = [([token_id], [_Kind.LOOKUP_BOUNDARY])] if is_allowed else []
                end_id = self._copy_end(walk) if match_bytes >= MIN_COPY_BYTES else None
                if end_id is not None and end_id != token_id:
                    choices.append(([end_id], [_Kind.COPY_END]))
                if choices:
                    self._push_likeliest(history, walk, choices, num_wanted)
                break  # the next turn goes on from what was chosen
            if not walk.push(token_id, _Kind.lookup(match_bytes, index == 0)):
                break
            if self.config.jump_forward and walk.forced_bytes():
                break  # the constraint forces what comes next: it drafts that
        return len(walk.token_ids) > num_before

    def _push_spaced(self, history: _History, walk: _Walk, num_wanted: int) -> bool:
        """Where nothing is forced only because white space may come first (`{"a": 1,` then ` "b"`) and
        nothing was looked up, push a space and the text forced after it, spelled as the tokenizer
        writes both (` "` `b` `":`), the first token of kind `SPACED_FIRST`. Returns whether anything was
        pushed."""
        last = self._bytes_of(walk.token_ids[-1:]) if walk.token_ids else bytes(history.text[-1:])
        if not self.config.jump_forward or self._space_id is None or not is_punctuation(last[-1:]):
            return False  # white space that a constraint makes optional follows punctuation (`,` `:` `[`)
        forced = walk.forced_bytes_after(self._space_id)[:MAX_FORCED_BYTES]
        token_ids = self._encode_whole_characters(b" " + forced) if forced else []
        if not token_ids:
            return False
        num_before = len(walk.token_ids)
        kinds = [_Kind.SPACED_FIRST] + [_Kind.FORCED] * (len(token_ids) - 1)
        for token_id, kind in zip(token_ids[: num_wanted - num_before], kinds):
            if not walk.push(token_id, kind):
                break
        return len(walk.token_ids) > num_before

    def _copy_end(self, walk: _Walk) -> int | None:
        """The token that most often ended a copy (`_learn`) among those the walk's mask allows next."""
        allowed = [token_id for token_id in self._copy_ends if walk.allows(token_id)]
        return max(allowed, key=self._copy_ends.__getitem__) if allowed else None

    def _history(self, seq: Sequence) -> _History:
        """`seq`'s history, its text brought up to its tokens."""
        history = self._histories.get(seq)
        if history is None or history.num_tokens > len(seq.token_ids):
            history = self._histories[seq] = _History()
        for token_id in seq.token_ids[history.num_tokens :]:
            history.text += self._bytes_of([token_id])
            history.ends.append(len(history.text))
        history.num_tokens = len(seq.token_ids)
        return history

    def _bytes_of(self, token_ids: list[int]) -> bytes:
        token_bytes = self._token_bytes
        return b"".join(token_bytes[token_id] if token_id < len(token_bytes) else b"" for token_id in token_ids)

    def _confidence_factor(self, level: str) -> float:
        """How much likelier than a draft's first token in general one is accepted after a token the
        target was this sure of (`confidence_level`, learnt from verification)."""
        overall = self._first_tokens.rate("all", _FIRST_TOKEN_PRIOR, _PRIOR_WEIGHT)
        return self._first_tokens.rate(level, overall, _PRIOR_WEIGHT) / overall

    def _rate(self, history: _History, kind: str) -> float:
        """The chance a draft token of `kind` is accepted: the sequence's own rate, drawn towards the engine's."""
        prior = _Kind.prior_rate(kind)
        engine_rate = self._acceptance.rate(kind, prior, _PRIOR_WEIGHT)
        return history.acceptance.rate(kind, engine_rate, _ENGINE_WEIGHT)

    def _lookup(self, history: _History, walk: _Walk, num_tokens: int) -> tuple[list[int], int, int | None]:
        """Up to `num_tokens` tokens of the text that followed the latest earlier occurrence of the
        longest suffix of the sequence's text (the draft so far included), that suffix's length in
        bytes (0: nothing recurs), and the index of the first of those tokens that starts where the
        copied text's clause ends (`ends_clause`; None: none does). The tokens are the ones that stood
        there (a copy is written as it was read), but for a match ending inside a token, whose rest
        the tokenizer encodes."""
        text, ends, token_ids = self._context(history, walk)
        match_bytes, end = longest_earlier_match(text, MAX_MATCH_BYTES)
        if match_bytes == 0:
            return [], 0, None
        index = bisect.bisect_right(ends, end)  # the token that holds byte `end`
        start = ends[index - 1] if index else 0
        head: list[int] = []
        if end != start:
            rest = text[end : ends[index]]
            head = self._encode_whole_characters(rest)
            if self._bytes_of(head) != rest:
                return head[:num_tokens], match_bytes, None  # the token's rest is not whole characters
            index += 1
        copied = token_ids[index : index + num_tokens - len(head)]
        starts = [ends[index + offset - 1] for offset in range(len(copied))]  # index >= 1: a match ends after byte 0
        boundary = next((len(head) + offset for offset, at in enumerate(starts) if ends_clause(text, at)), None)
        return (head + copied)[:num_tokens], match_bytes, boundary

    def _context(self, history: _History, walk: _Walk) -> tuple[bytes, list[int], list[int]]:
        """The sequence's text with the walk's draft so far, where each of its tokens ends in that
        text, and the token ids."""
        text, ends = bytes(history.text), list(history.ends)
        for token_id in walk.token_ids:
            text += self._bytes_of([token_id])
            ends.append(len(text))
        return text, ends, walk.seq.token_ids + walk.token_ids

    def _forced_spellings(self, history: _History, walk: _Walk, *, is_first: bool) -> list[tuple[list[int], list[str]]]:
        """The text the constraint forces next (up to `MAX_FORCED_BYTES`), spelled as the model may
        write it: (token ids, their kinds) for each spelling; none where nothing is forced (or
        jump-forward is off).

        The first spelling is the likeliest on its face: the longest prefix the sequence already
        wrote, token-aligned, in the tokens it wrote it in (`earlier_spelling`: a model writes a key's
        `firmware` as `f` `irm` `ware` again, where the tokenizer has `firm` `ware`), the rest encoded
        as the tokenizer would write it. At the start of a run of forced text (`is_first`) the
        tokenizer's own spelling follows, and for text starting with a word, that word's first
        character alone, then the tokenizer's spelling of the rest (a model spelling a key it did not
        expect often starts so: `s` `hift`)."""
        if not self.config.jump_forward:
            return []
        data = walk.forced_bytes()[:MAX_FORCED_BYTES]
        if not data:
            return []
        text, ends, token_ids = self._context(history, walk)
        first, num_spelled = earlier_spelling(text, ends, data)
        spelled = token_ids[first : first + num_spelled]
        token_ids = spelled + self._encode_whole_characters(data[len(self._bytes_of(spelled)) :])
        is_word = data[:1].isalnum() and not text[-1:].isalnum()  # a word starts (`shift`), not goes on (`hift`)
        kinds = [
            _Kind.forced(is_first=is_first and not index, is_spelled=index < num_spelled, is_word=is_word)
            for index in range(len(token_ids))
        ]
        spellings = [(token_ids, kinds)] if token_ids else []
        if not is_first:
            return spellings
        if num_spelled:
            encoded = self._encode_whole_characters(data)
            if encoded:
                first_kind = _Kind.forced(is_first=True, is_spelled=False, is_word=is_word)
                spellings.append((encoded, [first_kind] + [_Kind.FORCED] * (len(encoded) - 1)))
        split = self._encode_whole_characters(data[:1]) if is_word else []
        if len(split) == 1:
            split += self._encode_whole_characters(data[1:])
            spellings.append((split, [_Kind.SPLIT_FIRST] + [_Kind.FORCED] * (len(split) - 1)))
        return spellings

    def _encode_whole_characters(self, data: bytes) -> list[int]:
        """`data` encoded by the tokenizer, whole characters only: bytes past the last complete UTF-8
        character (text ending mid-character, or cut) and from the first invalid byte on are left out."""
        cached = self._encodings.get(data)
        if cached is not None:
            return list(cached)
        if len(self._encodings) >= MAX_CACHED_ENCODINGS:
            self._encodings.clear()
        try:
            text = codecs.getincrementaldecoder("utf-8")().decode(data, final=False)
        except UnicodeDecodeError as exc:
            text = data[: exc.start].decode("utf-8")
        token_ids = self.tokenizer.encode(text, parse_special_tokens=False) if text else []
        self._encodings[data] = tuple(token_ids)
        return token_ids

    def _draft_with_model(self, modelled: list[tuple[_Walk, int]]) -> None:
        """Extend each walk by up to its count of draft-model tokens, one batched draft pass per token."""
        if self.draft_model is None:
            return
        goals = {id(walk): len(walk.token_ids) + num_tokens for walk, num_tokens in modelled}
        active = [walk for walk, _ in modelled]
        while active:
            contexts = [(walk.seq, walk.seq.token_ids + walk.token_ids) for walk in active]
            logits, rows = self.draft_model.next_logits(contexts)  # [R, V]
            if logits is None:
                return
            active = [active[row] for row in rows]
            for walk, row_logits in zip(active, logits):
                self._draft_one(walk, row_logits)
            active = [walk for walk in active if walk.is_open and len(walk.token_ids) < goals[id(walk)]]

    def _draft_one(self, walk: _Walk, logits: torch.Tensor) -> None:
        """Pick the next draft token from the draft's logits (float32 [V], edited in place) under the
        walk's mask and its request's processing; q = 0 for end tokens, so the draft never ends a text."""
        if walk.mask is not None:
            logits.masked_fill_(~walk.mask, -torch.inf)
        end_ids = [token_id for token_id in walk.end_ids if token_id < logits.shape[0]]
        if end_ids:
            logits[end_ids] = -torch.inf
        row = logits[None]  # [1, V]
        params = walk.params
        if params.has_penalties:
            apply_token_penalties(row, [walk.seq.token_ids + walk.token_ids], [walk.seq.num_prompt_tokens], [params])
        best = int(argmax_rows(row)[0])
        if float(logits[best]) == -torch.inf:
            walk.is_open = False  # the draft's vocabulary has no token the mask allows
            return
        if params.is_greedy:
            token_id = best
            probs = None
        else:
            probs = sampling_probs(row, [params])[0]  # [V]
            token_id = int(sample_from_probs(probs[None], [walk.seq.generator])[0])
        if walk.push(token_id, _Kind.MODELLED):
            walk.num_modelled += 1
            if probs is not None:
                walk.modelled_probs.append(probs)

    # Verifying

    def verify(
        self, logits: torch.Tensor, seq: Sequence, params: SamplingParams, draft: Draft
    ) -> tuple[list[int], torch.Tensor]:
        """The tokens this step produces for `seq`: the accepted draft tokens, then one token of the target.

        Args:
            logits: float32 [k + 1, V]: row i scores the position after `seq.token_ids + draft[:i]`;
                modified in place (masks and penalties).
            seq: the sequence, its tokens without the draft.
            params: its request's parameters.
            draft: the checked draft.

        Returns:
            (token ids, 1..k + 1 of them; the logits rows of those positions, processed (masked,
            penalized) where they are sampled from or logprobs are asked for).

        A greedy request without penalties or logprobs skips the masking: a row's argmax the mask
        allows is its masked argmax (the first of equals as well), and a draft token is allowed where
        it stands, so only a row whose argmax is not the draft token's needs its mask applied.
        """
        draft_ids = draft.token_ids
        masks = draft.masks
        is_plain_greedy = params.is_greedy and not params.has_penalties and params.logprobs is None
        if masks is not None and not is_plain_greedy:
            logits.masked_fill_(~torch.stack(masks), -torch.inf)
        if params.has_penalties:
            prefixes = [seq.token_ids + draft_ids[:index] for index in range(len(draft_ids) + 1)]
            rows = len(prefixes)
            apply_token_penalties(logits, prefixes, [seq.num_prompt_tokens] * rows, [params] * rows)
        if params.is_greedy:
            targets = argmax_rows(logits).tolist()
            num_accepted = 0
            while True:
                token_id = targets[num_accepted]
                if is_plain_greedy and masks is not None and not bool(masks[num_accepted][token_id]):
                    logits[num_accepted].masked_fill_(~masks[num_accepted], -torch.inf)
                    token_id = int(argmax_rows(logits[num_accepted : num_accepted + 1])[0])
                if num_accepted == len(draft_ids) or token_id != draft_ids[num_accepted]:
                    break
                num_accepted += 1
            token_ids = draft_ids[:num_accepted] + [token_id]
            probability = float(torch.softmax(logits[num_accepted], 0)[token_id])  # the mask's share aside
        else:
            probs = sampling_probs(logits, [params] * logits.shape[0])
            token_ids = _accept_sampled(probs, seq, draft)
            num_accepted = len(token_ids) - 1
            probability = float(probs[num_accepted, token_ids[-1]])
        history = self._history(seq)
        history.confidence, history.confidence_at = confidence_level(probability), len(seq.token_ids) + len(token_ids)
        seq.num_draft_tokens += len(draft_ids)
        seq.num_accepted_draft_tokens += num_accepted
        self._learn(seq, draft, token_ids)
        return token_ids, logits[: len(token_ids)]

    def _learn(self, seq: Sequence, draft: Draft, token_ids: list[int]) -> None:
        """Count which kinds of draft tokens were accepted (`token_ids`: what the step produced), and
        whether each alternative reached would have been, for the sequence and the engine (whose
        counts fade a little each time); note what ended a copy (`_learn_copy_end`); adapt the draft
        model's allowance: doubled after a whole acceptance of its tokens, cut to one past what was
        accepted of them after a rejection there."""
        num_accepted = len(token_ids) - 1
        history = self._history(seq)
        self._acceptance.fade()
        for acceptance in (self._acceptance, history.acceptance):
            acceptance.record(draft.kinds, num_accepted)
            for position, kind, token_id in draft.alternatives:
                if position <= num_accepted:
                    acceptance.record_one(kind, token_ids[position] == token_id)
        self._first_tokens.fade()
        self._first_tokens.record_one("all", num_accepted > 0)
        self._first_tokens.record_one(draft.confidence, num_accepted > 0)
        self._learn_copy_end(draft.kinds, token_ids)
        num_accepted_modelled = num_accepted - (len(draft.token_ids) - draft.num_modelled)
        if draft.num_modelled and self.draft_model is not None and num_accepted_modelled >= 0:
            allowance = self.draft_model.allowance(seq)
            maximum = self.config.num_draft_tokens
            self.draft_model.set_allowance(
                seq, _next_allowance(allowance, draft.num_modelled, num_accepted_modelled, maximum)
            )

    def _learn_copy_end(self, kinds: list[str], token_ids: list[int]) -> None:
        """Count the tokens that ended copies: the step's own token where a looked-up token of a copy
        in progress was rejected, and accepted `COPY_END` tokens, when they are punctuation
        (`",` after a copied value; a word there is the answer leaving the copy, not ending it)."""
        ends = [token_ids[index] for index, kind in enumerate(kinds[: len(token_ids) - 1]) if kind == _Kind.COPY_END]
        last = len(token_ids) - 1
        if last < len(kinds) and _Kind.is_copy(kinds[last]):
            ends.append(token_ids[last])
        for token_id in ends:
            if is_punctuation(self._bytes_of([token_id])):
                self._copy_ends[token_id] = self._copy_ends.get(token_id, 0) + 1
        while len(self._copy_ends) > MAX_COPY_ENDS:
            del self._copy_ends[min(self._copy_ends, key=self._copy_ends.__getitem__)]

    def release_finished(self) -> None:
        """Free the draft model's KV of finished sequences (call from the stepping thread only)."""
        if self.draft_model is not None:
            self.draft_model.release_finished()


def _next_allowance(allowance: int, num_drafted: int, num_accepted: int, maximum: int) -> int:
    return min(maximum, allowance * 2) if num_accepted == num_drafted else num_accepted + 1


def _accept_sampled(probs: torch.Tensor, seq: Sequence, draft: Draft) -> list[int]:
    """Speculative sampling: probs is [k + 1, V], each row the processed target distribution p at that
    position; a draft token x drawn from q is kept with probability min(1, p(x) / q(x)), else the
    position is drawn from max(0, p - q) (q one-hot for deterministic tokens: p with x removed)."""
    generator = seq.generator
    draft_ids = draft.token_ids
    for index, token_id in enumerate(draft_ids):
        q = draft.draft_probs(index)
        q_of_token = 1.0 if q is None else float(q[token_id])
        if float(torch.rand((), generator=generator)) * q_of_token < float(probs[index, token_id]):
            continue
        if q is None:
            residual = probs[index].clone()
            residual[token_id] = 0.0
        else:
            residual = (probs[index] - q).clamp_(min=0.0)
        if not bool(residual.any()):
            continue  # p <= q everywhere, so p == q up to rounding: x is accepted
        return draft_ids[:index] + [int(sample_from_probs(residual[None], [generator])[0])]
    return draft_ids + [int(sample_from_probs(probs[-1:], [generator])[0])]
