"""Test doubles for the engine's control plane: a deterministic paged "model" and a digits-only matcher.

`FakeRunner` honours the `ModelRunner` interface, and its "KV cache" really is paged: each slot stores
the token id written there, and the logits of a sequence are a pure function of the tokens it reads
back through its block table. A wrong block table, a missed copy-on-write or a stale prefix-cache hit
therefore changes the output, which tests compare with `reference_logits` over the plain token list.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from grammars.errors import TokenRejectedError
from runtime.config import ModelConfig
from runtime.errors import RequestError
from runtime.model.runner import ForwardBatch
from runtime.tokenizer import Tokenizer

#: The fake model's logits width: the SmolLM2 vocabulary, so the real tokenizer decodes every id.
FAKE_VOCAB_SIZE = 49152
_HASH_BASE = 1_000_003
_HASH_MODULUS = (1 << 61) - 1


def fake_config(vocab_size: int = FAKE_VOCAB_SIZE, max_position_embeddings: int = 512) -> ModelConfig:
    return ModelConfig(
        architecture="llama",
        vocab_size=vocab_size,
        hidden_size=8,
        intermediate_size=8,
        num_layers=1,
        num_heads=1,
        num_kv_heads=1,
        max_position_embeddings=max_position_embeddings,
    )


def context_hash(token_ids: list[int]) -> int:
    value = 7
    for token_id in token_ids:
        value = (value * _HASH_BASE + token_id + 1) % _HASH_MODULUS
    return value


def reference_logits(
    token_ids: list[int], vocab_size: int = FAKE_VOCAB_SIZE, num_live_tokens: int = 200
) -> torch.Tensor:
    """float32 [V] logits the fake model gives after `token_ids`.

    Only `num_live_tokens` ids (the low ones, mostly single characters) get spread-out logits, so
    greedy continuations stay short-texted and readable; the rest sit far below.
    """
    generator = torch.Generator().manual_seed(context_hash(token_ids))
    logits = torch.full((vocab_size,), -20.0)
    logits[:num_live_tokens] = torch.randn(num_live_tokens, generator=generator) * 3.0
    return logits


def reference_greedy(prompt_ids: list[int], num_tokens: int, banned_ids: frozenset[int] = frozenset()) -> list[int]:
    """Greedy continuation of the fake model computed without any cache."""
    token_ids = list(prompt_ids)
    for _ in range(num_tokens):
        logits = reference_logits(token_ids)
        for token_id in banned_ids:
            logits[token_id] = -math.inf
        token_ids.append(int(logits.argmax()))
    return token_ids[len(prompt_ids) :]


class FakeRunner:
    """A `ModelRunner` stand-in whose KV slots hold token ids; see the module docstring."""

    def __init__(
        self,
        *,
        num_blocks: int,
        block_size: int = 4,
        vocab_size: int = FAKE_VOCAB_SIZE,
        max_position_embeddings: int = 512,
    ) -> None:
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.config = fake_config(vocab_size, max_position_embeddings)
        self.bytes_per_token = 8
        self.pool_bytes = num_blocks * block_size * self.bytes_per_token
        self.slots: list[list[int | None]] = [[None] * block_size for _ in range(num_blocks)]
        self.num_forward_calls = 0
        self.num_copied_blocks = 0
        self.max_batch_size = 0
        self.max_num_tokens = 0

    def forward(self, batch: ForwardBatch) -> torch.Tensor:
        self.num_forward_calls += 1
        self.max_batch_size = max(self.max_batch_size, len(batch.token_ids))
        self.max_num_tokens = max(self.max_num_tokens, sum(map(len, batch.token_ids)))
        rows = []
        for token_ids, num_cached, table in zip(batch.token_ids, batch.num_cached, batch.block_tables):
            for offset, token_id in enumerate(token_ids):
                position = num_cached + offset
                self.slots[table[position // self.block_size]][position % self.block_size] = token_id
            context = [self._read(table, position) for position in range(num_cached + len(token_ids))]
            ends = range(num_cached + 1, len(context) + 1) if batch.all_logits else [len(context)]
            rows.extend(reference_logits(context[:end], self.config.vocab_size) for end in ends)
        return torch.stack(rows)  # [B, V], or [sum k_i, V] with all_logits

    def _read(self, table: list[int], position: int) -> int:
        token_id = self.slots[table[position // self.block_size]][position % self.block_size]
        if token_id is None:
            raise RequestError(f"position {position} was never written", "block_tables")
        return token_id

    def copy_blocks(self, pairs: list[tuple[int, int]]) -> None:
        for source, target in pairs:
            self.slots[target] = list(self.slots[source])
        self.num_copied_blocks += len(pairs)


@lru_cache(maxsize=1)
def smollm2_tokenizer() -> Tokenizer:
    """The real SmolLM2 tokenizer (loaded once per session, shared with every test that needs it)."""
    from runtime.loading import load_checkpoint

    return load_checkpoint(None).tokenizer


class DigitsMatcher:
    """Allows tokens made only of ASCII digits, at most `max_digits` digits in all, then only EOS."""

    def __init__(self, constraint: DigitsConstraint) -> None:
        self.error = None
        self._constraint = constraint
        self.lengths: list[int] = []  # digits after each advance

    @property
    def num_digits(self) -> int:
        return self.lengths[-1] if self.lengths else 0

    def mask(self, max_seconds: float | None = None, max_remaining_tokens: int | None = None) -> torch.Tensor:
        return self._constraint.masks[self.num_digits]

    def advance(self, token_id: int) -> None:
        if not bool(self.mask()[token_id]):
            raise TokenRejectedError(token_id)
        self.lengths.append(self.num_digits + self._constraint.token_lengths[token_id])

    def is_accepting(self) -> bool:
        return self.num_digits > 0

    def fork(self) -> DigitsMatcher:
        child = DigitsMatcher(self._constraint)
        child.lengths = list(self.lengths)
        return child


class DigitsConstraint:
    """A `runtime.engine.constraints.Constraint` for "1 to max_digits digits", built over any vocabulary."""

    def __init__(self, max_digits: int = 6) -> None:
        self.max_digits = max_digits
        self.num_matchers = 0
        self.masks: list[torch.Tensor] = []
        self.token_lengths: list[int] = []

    def matcher(self, vocab: object) -> DigitsMatcher:
        if not self.masks:
            token_bytes = list(vocab.token_bytes) + [None] * (vocab.size - len(vocab.token_bytes))
            self.token_lengths = [len(b) if b and b.isdigit() else 0 for b in token_bytes]
            lengths = torch.tensor(self.token_lengths)
            eos_mask = torch.zeros(vocab.size, dtype=torch.bool)
            eos_mask[list(vocab.eos_token_ids)] = True
            # masks[d]: allowed after d digits (bool [V]).
            for num_digits in range(self.max_digits + 1):
                allowed = (lengths > 0) & (lengths <= self.max_digits - num_digits)
                self.masks.append(allowed | eos_mask if num_digits > 0 else allowed)
        self.num_matchers += 1
        return DigitsMatcher(self)
