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

Here: the configuration and the `Speculator` (drafts proposed in turns from each source, verified,
learnt from). Apart: a draft and its checks (runtime.engine.draft_walk), where the text holds copies
and spellings (runtime.engine.draft_text), acceptance rates and row costs (runtime.engine.draft_rates).
"""

from __future__ import annotations

import bisect
import codecs
import os
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from runtime.engine.draft_rates import (
    DEFAULT_ROW_COST,
    MIN_COPY_BYTES,
    Acceptance,
    DraftKind,
    RowCost,
    confidence_factor,
    confidence_level,
    draft_length,
    kind_rate,
)
from runtime.engine.draft_text import (
    MAX_MATCH_BYTES,
    earlier_spelling,
    ends_clause,
    is_punctuation,
    longest_earlier_match,
)
from runtime.engine.draft_walk import Draft, DraftWalk
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
#: With a draft model, lookup drafts only after a match this long (a copied span); else the model drafts.
MODEL_FREE_MATCH_BYTES = 16
#: Forced and looked-up encodings kept before the cache is cleared.
MAX_CACHED_ENCODINGS = 4096
#: Tokens that ended copies (`Speculator._copy_ends`) remembered; the least counted goes first.
MAX_COPY_ENDS = 16


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


@dataclass(eq=False)
class _History:
    """What a sequence's lookups read: the bytes of its tokens so far, where each token ends in them,
    and its own acceptance counts."""

    num_tokens: int = 0
    text: bytearray = field(default_factory=bytearray)
    ends: list[int] = field(default_factory=list)
    acceptance: Acceptance = field(default_factory=Acceptance)
    #: How sure the target was of its own token at the end of the last verification (`confidence_level`),
    #: and the token count it ended at (the level holds only for the step right after it).
    confidence: str = "unknown"
    confidence_at: int = -1


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
        self._acceptance = Acceptance()
        #: How often a draft's first token is accepted, in all ("all") and after each confidence level.
        self._first_tokens = Acceptance()
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
        walks: list[DraftWalk] = []
        modelled: list[tuple[DraftWalk, int]] = []
        row_cost = self.row_cost.per_sequence(len(candidates))
        for seq, params, budget in candidates:
            num_wanted = min(self.config.num_draft_tokens, budget - 1)
            if num_wanted < 1 or params.use_beam_search:
                continue
            walk = DraftWalk(seq, params, budget, self._eos_token_ids)
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

    def _draft_text(self, walk: DraftWalk, num_wanted: int, row_cost: float) -> None:
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
        self, history: _History, walk: DraftWalk, candidates: list[tuple[list[int], list[str]]], num_wanted: int
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

    def _push_lookup(self, history: _History, walk: DraftWalk, num_wanted: int) -> bool:
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
                choices = [([token_id], [DraftKind.LOOKUP_BOUNDARY])] if is_allowed else []
                end_id = self._copy_end(walk) if match_bytes >= MIN_COPY_BYTES else None
                if end_id is not None and end_id != token_id:
                    choices.append(([end_id], [DraftKind.COPY_END]))
                if choices:
                    self._push_likeliest(history, walk, choices, num_wanted)
                break  # the next turn goes on from what was chosen
            if not walk.push(token_id, DraftKind.lookup(match_bytes, index == 0)):
                break
            if self.config.jump_forward and walk.forced_bytes():
                break  # the constraint forces what comes next: it drafts that
        return len(walk.token_ids) > num_before

    def _push_spaced(self, history: _History, walk: DraftWalk, num_wanted: int) -> bool:
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
        kinds = [DraftKind.SPACED_FIRST] + [DraftKind.FORCED] * (len(token_ids) - 1)
        for token_id, kind in zip(token_ids[: num_wanted - num_before], kinds):
            if not walk.push(token_id, kind):
                break
        return len(walk.token_ids) > num_before

    def _copy_end(self, walk: DraftWalk) -> int | None:
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
        return confidence_factor(self._first_tokens, level)

    def _rate(self, history: _History, kind: str) -> float:
        """The chance a draft token of `kind` is accepted: the sequence's own rate, drawn towards the engine's."""
        return kind_rate(self._acceptance, history.acceptance, kind)

    def _lookup(self, history: _History, walk: DraftWalk, num_tokens: int) -> tuple[list[int], int, int | None]:
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

    def _context(self, history: _History, walk: DraftWalk) -> tuple[bytes, list[int], list[int]]:
        """The sequence's text with the walk's draft so far, where each of its tokens ends in that
        text, and the token ids."""
        text, ends = bytes(history.text), list(history.ends)
        for token_id in walk.token_ids:
            text += self._bytes_of([token_id])
            ends.append(len(text))
        return text, ends, walk.seq.token_ids + walk.token_ids

    def _forced_spellings(
        self, history: _History, walk: DraftWalk, *, is_first: bool
    ) -> list[tuple[list[int], list[str]]]:
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
            DraftKind.forced(is_first=is_first and not index, is_spelled=index < num_spelled, is_word=is_word)
            for index in range(len(token_ids))
        ]
        spellings = [(token_ids, kinds)] if token_ids else []
        if not is_first:
            return spellings
        if num_spelled:
            encoded = self._encode_whole_characters(data)
            if encoded:
                first_kind = DraftKind.forced(is_first=True, is_spelled=False, is_word=is_word)
                spellings.append((encoded, [first_kind] + [DraftKind.FORCED] * (len(encoded) - 1)))
        split = self._encode_whole_characters(data[:1]) if is_word else []
        if len(split) == 1:
            split += self._encode_whole_characters(data[1:])
            spellings.append((split, [DraftKind.SPLIT_FIRST] + [DraftKind.FORCED] * (len(split) - 1)))
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

    def _draft_with_model(self, modelled: list[tuple[DraftWalk, int]]) -> None:
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

    def _draft_one(self, walk: DraftWalk, logits: torch.Tensor) -> None:
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
        if walk.push(token_id, DraftKind.MODELLED):
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
        ends = [
            token_ids[index] for index, kind in enumerate(kinds[: len(token_ids) - 1]) if kind == DraftKind.COPY_END
        ]
        last = len(token_ids) - 1
        if last < len(kinds) and DraftKind.is_copy(kinds[last]):
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
