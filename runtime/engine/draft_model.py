"""A draft model for speculative decoding: a second, cheaper model that follows the target's sequences.

The draft keeps its own `ModelRunner` and KV pool, paged by its own `BlockManager` (no prefix caching:
a draft's KV is throwaway). For each target sequence it keeps a shadow `Sequence` whose first
`num_cached` tokens sit in the draft's cache. Each call to `next_logits` brings a shadow up to the
context it is given: the cached prefix that still matches the context is kept (after a verification
that is the accepted prefix: the KV of rejected draft tokens past it is simply overwritten later),
every token after it is fed in one pass (the catch-up: the accepted tokens and the target's own next
token, or the whole prompt the first time), and the logits of the last position come back.

Two ways to get one (`draft_model_for`):

- another model with the same tokenizer (`SpeculativeConfig.draft_model`: a GGUF file or Hugging Face
  folder, or a loaded `Engine` whose model it borrows), checked by comparing the vocabularies;
- self-speculation (`SpeculativeConfig.self_draft_layers=n`): the target's own first n layers, then its
  final norm and head, sharing the target's weights (no copy) with a KV pool of n layers. Exact like
  any draft (verification decides), but an early exit that was never trained as one drafts poorly: on
  SmolLM2 5-16% of its drafts were accepted and it never paid (benchmarks/speculative.py).

Shadows are released when their sequence has finished (`release_finished`, called by the engine from
the stepping thread, never while a draft pass runs).
"""

from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from runtime.engine.block_manager import BlockManager
from runtime.engine.sequence import Sequence, SequenceStatus
from runtime.errors import RequestError
from runtime.model.runner import ForwardBatch, ModelRunner

if TYPE_CHECKING:
    from runtime.engine.speculative import SpeculativeConfig
    from runtime.model.architectures.llama import Transformer
    from runtime.tokenizer import Tokenizer


@dataclass(eq=False)
class _Shadow:
    """The draft's view of one target sequence."""

    target: Sequence
    #: Token ids with `num_cached` of them in the draft's KV, and the block table covering them.
    seq: Sequence
    #: Leading tokens known to equal the target's (they were its tokens when last seen; those never change).
    num_stable: int
    #: How many tokens the model drafts next for this sequence (adapted from acceptance).
    allowance: int


class DraftModel:
    """A draft model's runner and KV pool, with one shadow per target sequence it drafts for.

    Args:
        runner: runs the draft model (its pool is the draft's own; nothing else may use it).
        vocab_size: width of the target's logits: the draft's are cut or padded (with -inf) to it.
        num_draft_tokens: the most tokens it drafts per step, and every sequence's first allowance.

    Attributes:
        block_manager: pages the draft's KV pool.
    """

    def __init__(self, runner: Any, *, vocab_size: int, num_draft_tokens: int) -> None:
        self.runner = runner
        self.vocab_size = vocab_size
        self.num_draft_tokens = num_draft_tokens
        self.block_manager = BlockManager(runner.num_blocks, runner.block_size, enable_prefix_caching=False)
        self._shadows: dict[int, _Shadow] = {}

    def allowance(self, seq: Sequence) -> int:
        """How many tokens the model drafts next for `seq`."""
        shadow = self._shadows.get(seq.seq_id)
        return self.num_draft_tokens if shadow is None else shadow.allowance

    def set_allowance(self, seq: Sequence, allowance: int) -> None:
        """Set `seq`'s next draft length (a sequence not drafted for yet is left alone)."""
        shadow = self._shadows.get(seq.seq_id)
        if shadow is not None:
            shadow.allowance = allowance

    def next_logits(self, contexts: list[tuple[Sequence, list[int]]]) -> tuple[torch.Tensor | None, list[int]]:
        """The draft's next-token logits after each context, in one forward pass.

        Args:
            contexts: (target sequence, its context: its tokens and the draft so far) pairs.

        Returns:
            (float32 logits [B, V], V the target's width, of the contexts that got a row, or None when
            none did; the indices into `contexts` of those rows). A context the draft's pool or window
            cannot hold, or with a token past the draft's vocabulary, gets none.
        """
        fed: list[Sequence] = []
        index: list[int] = []
        copy_pairs: list[tuple[int, int]] = []
        for i, (target, context) in enumerate(contexts):
            shadow = self._sync(target, context)
            if shadow is not None:
                copy_pairs.extend(self.block_manager.append(shadow.seq))
                fed.append(shadow.seq)
                index.append(i)
        if not fed:
            return None, []
        if copy_pairs:
            self.runner.copy_blocks(copy_pairs)
        batch = ForwardBatch(
            token_ids=[seq.token_ids[seq.num_cached :] for seq in fed],
            num_cached=[seq.num_cached for seq in fed],
            block_tables=[seq.block_table for seq in fed],
        )
        logits = self.runner.forward(batch)  # [B, V_draft]
        for seq in fed:
            seq.num_cached = seq.num_tokens
        width = logits.shape[1]
        if width > self.vocab_size:
            logits = logits[:, : self.vocab_size]
        elif width < self.vocab_size:
            padding = logits.new_full((logits.shape[0], self.vocab_size - width), -torch.inf)
            logits = torch.cat((logits, padding), dim=1)  # [B, V]
        return logits, index

    def _sync(self, target: Sequence, context: list[int]) -> _Shadow | None:
        """Point `target`'s shadow at `context`, keeping the cached prefix that matches it, once the
        pool has the blocks its uncached tail needs (the caller appends them); None when it has not."""
        if len(context) > self.runner.config.max_position_embeddings:
            return None
        shadow = self._shadows.get(target.seq_id)
        if shadow is None:
            seq = Sequence(seq_id=target.seq_id, token_ids=[], num_prompt_tokens=0)
            shadow = self._shadows[target.seq_id] = _Shadow(target, seq, 0, self.num_draft_tokens)
        seq = shadow.seq
        num_matching = min(shadow.num_stable, seq.num_cached)
        limit = min(seq.num_cached, len(context) - 1)  # the last context token is always fed
        while num_matching < limit and seq.token_ids[num_matching] == context[num_matching]:
            num_matching += 1
        if max(context[num_matching:]) >= self.runner.config.vocab_size:
            return None  # a token the draft cannot embed (its vocabulary is narrower than the target's logits)
        seq.num_cached = min(num_matching, limit)
        seq.token_ids = list(context)
        shadow.num_stable = target.num_tokens
        self.block_manager.truncate(seq)
        if not self.block_manager.can_append(seq):
            self._release_idle()
            if not self.block_manager.can_append(seq):
                self.release(target)
                return None
        return shadow

    def release(self, target: Sequence) -> None:
        """Free the draft blocks of `target`'s shadow."""
        shadow = self._shadows.pop(target.seq_id, None)
        if shadow is not None:
            self.block_manager.free(shadow.seq)

    def release_finished(self) -> None:
        """Free the shadows of every finished target sequence (call from the stepping thread only)."""
        for shadow in [s for s in self._shadows.values() if s.target.is_finished]:
            self.release(shadow.target)

    def _release_idle(self) -> None:
        """Make room: free the shadows of sequences that are not running (finished, or preempted)."""
        for shadow in [s for s in self._shadows.values() if s.target.status is not SequenceStatus.RUNNING]:
            self.release(shadow.target)


def draft_model_for(config: SpeculativeConfig, runner: Any, tokenizer: Tokenizer) -> DraftModel | None:
    """The draft model `config` asks for, with a KV pool of as many positions as the target's, or None.

    Args:
        config: the speculative configuration (`draft_model` or `self_draft_layers`).
        runner: the target's `ModelRunner`.
        tokenizer: the target's tokenizer.

    Raises:
        RequestError: a draft with another vocabulary, a self-draft as deep as the target or over a
            runner without a model, or a `draft_model` of the wrong type (field names which).
        ModelLoadError: the draft model cannot be loaded.
    """
    if config.self_draft_layers is not None:
        if not isinstance(runner, ModelRunner):
            raise RequestError("self-speculation needs a ModelRunner over a real model", "self_draft_layers")
        num_layers = runner.config.num_layers
        if config.self_draft_layers >= num_layers:
            raise RequestError(f"must be below the model's {num_layers} layers", "self_draft_layers")
        model = early_exit_model(runner.model, config.self_draft_layers)
        return DraftModel(
            _own_runner(model, runner), vocab_size=runner.config.vocab_size, num_draft_tokens=config.num_draft_tokens
        )
    if config.draft_model is None:
        return None
    draft_engine = _draft_engine(config.draft_model, runner)
    check_same_vocabulary(draft_engine.tokenizer, tokenizer)
    if not isinstance(draft_engine.runner, ModelRunner):
        raise RequestError("expected an Engine over a ModelRunner", "draft_model")
    return DraftModel(
        _own_runner(draft_engine.runner.model, runner),
        vocab_size=runner.config.vocab_size,
        num_draft_tokens=config.num_draft_tokens,
    )


def _draft_engine(draft_model: object, runner: Any) -> Any:
    """The draft as an `Engine`: the one given, or one loaded from a path (with a one-block pool: the
    draft's own pool is sized by the caller)."""
    from runtime.engine.llm_engine import Engine  # the engine imports this module

    if isinstance(draft_model, Engine):
        return draft_model
    if isinstance(draft_model, (str, os.PathLike)):
        from runtime.launch import load

        # The load's defaults (bfloat16, int4 for a 4-bit checkpoint) are the fastest: a draft's precision
        # changes which tokens get accepted, never the output.
        return load(draft_model, kv_cache_bytes=0, block_size=runner.block_size, max_model_len=2)
    raise RequestError(f"expected a model path or a runtime.Engine, got {type(draft_model).__name__}", "draft_model")


def _own_runner(model: Transformer, target: Any) -> ModelRunner:
    """A runner over `model` with a pool of as many blocks (of the same size) as the target's."""
    return ModelRunner(model, num_blocks=target.num_blocks, block_size=target.block_size)


def check_same_vocabulary(draft: Tokenizer, target: Tokenizer) -> None:
    """Refuse a draft whose tokens are not the target's, id for id (bytes and special tokens).

    Raises:
        RequestError: the vocabularies differ (field "draft_model"; the message names the first id).
    """
    if draft.vocab_size != target.vocab_size:
        raise RequestError(
            f"the draft's vocabulary has {draft.vocab_size} tokens, the model's {target.vocab_size}", "draft_model"
        )
    for token_id, (a, b) in enumerate(zip(draft.decoded_bytes, target.decoded_bytes)):
        if a != b:
            raise RequestError(
                f"token {token_id} is {a!r} in the draft's vocabulary, {b!r} in the model's", "draft_model"
            )
    if draft.special_ids != target.special_ids:
        raise RequestError("the draft's special tokens are not the model's", "draft_model")


def early_exit_model(model: Transformer, num_layers: int) -> Transformer:
    """The model's first `num_layers` layers, then its final norm and head: the same module type and
    forward over the same parameters (nothing copied), with a config of `num_layers` layers.

    Raises:
        RequestError: `num_layers` outside [1, the model's layers) (field "self_draft_layers").
    """
    if not 1 <= num_layers < len(model.layers):
        raise RequestError(f"must be in [1, {len(model.layers)}), got {num_layers}", "self_draft_layers")
    shallow = copy.copy(model)  # a new module object over the same child modules and parameters
    shallow._modules = dict(model._modules)  # its own child table, so replacing `layers` leaves the model whole
    shallow.layers = nn.ModuleList(list(model.layers)[:num_layers])
    shallow.config = dataclasses.replace(model.config, num_layers=num_layers)
    return shallow
