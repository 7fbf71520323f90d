"""The token vocabulary as the constraint engine sees it: the exact bytes of every token id.

Special tokens have no bytes: they are never part of a constrained text, except the end-of-sequence
ids, which a mask allows exactly when the text so far is complete. The mask is as wide as the
model's logits (`size`), which may exceed the tokenizer's vocabulary; padded ids are never allowed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from functools import cached_property
from typing import Any, NamedTuple

import numpy as np

from grammars.errors import GrammarError
from grammars.masking.token_decoding import TokenDecoding, end_of_generation_ids


class Vocabulary:
    """Token id -> bytes, end-of-sequence ids and mask width.

    Args:
        token_bytes: the bytes of each token id; None for special (control) tokens.
        eos_token_ids: ids that end a sequence; allowed by a mask only when the matcher accepts.
        size: mask width (the logits width); defaults to len(token_bytes).
    Raises:
        GrammarError: no end-of-sequence id, or ids out of range.
    """

    def __init__(
        self, token_bytes: Sequence[bytes | None], eos_token_ids: Sequence[int], *, size: int | None = None
    ) -> None:
        self.token_bytes: tuple[bytes | None, ...] = tuple(token_bytes)
        self.size = len(self.token_bytes) if size is None else size
        self.eos_token_ids = tuple(sorted(set(eos_token_ids)))
        if self.size < len(self.token_bytes):
            raise GrammarError(
                f"mask width {self.size} is smaller than the vocabulary ({len(self.token_bytes)} tokens)"
            )
        if not self.eos_token_ids:
            raise GrammarError("the vocabulary has no end-of-sequence token; pass eos_token_ids")
        if any(not 0 <= i < self.size for i in self.eos_token_ids):
            raise GrammarError(f"end-of-sequence ids {self.eos_token_ids} are outside the vocabulary")

    @classmethod
    def from_tokenizer(
        cls, tokenizer: Any, *, size: int | None = None, eos_token_ids: Sequence[int] | None = None
    ) -> Vocabulary:
        """Build the vocabulary of a tokenizer.

        A `tokenizers.Tokenizer` (or a tokenizer.json path) is read by `TokenDecoding`, the same code the
        runtime's tokenizer uses, so both give the same bytes; its end-of-sequence ids are the special
        tokens named in `END_OF_GENERATION_TEXTS`.

        Args:
            tokenizer: a `tokenizers.Tokenizer`, a path to a tokenizer.json, or an object with
                `token_bytes` and `eos_token_ids` attributes (the runtime's tokenizer).
            size: mask width; default: the tokenizer's vocabulary size.
            eos_token_ids: override the end-of-sequence ids.
        Raises:
            GrammarError: a tokenizer model this engine cannot map to bytes.
        """
        if isinstance(tokenizer, (str, os.PathLike)):
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(os.fspath(tokenizer))
        if hasattr(tokenizer, "token_bytes") and hasattr(tokenizer, "eos_token_ids"):
            token_bytes = list(tokenizer.token_bytes)
            declared_eos = tuple(tokenizer.eos_token_ids)
        else:
            token_bytes = TokenDecoding(tokenizer).token_bytes
            declared_eos = end_of_generation_ids(tokenizer)
        return cls(token_bytes, declared_eos if eos_token_ids is None else tuple(eos_token_ids), size=size)

    @cached_property
    def fingerprint(self) -> str:
        """A hash of the token bytes, end-of-sequence ids and width: the vocabulary half of cache keys."""
        digest = hashlib.sha256()
        digest.update(f"{self.size}|{self.eos_token_ids}|".encode())
        for data in self.token_bytes:
            digest.update(b"\xff" if data is None else len(data).to_bytes(2, "little") + data)
        return digest.hexdigest()[:32]

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and other.fingerprint == self.fingerprint

    @cached_property
    def single_byte_tokens(self) -> int:
        """The bytes that are tokens of their own, as a 256-bit mask (all of them in byte-level BPE
        and SentencePiece byte fallback; a few unusual ones may be missing): a text of n such bytes
        takes at most n tokens, which is how length-aware masks count a completion's tokens."""
        return sum(1 << data[0] for data in set(self.token_bytes) if data is not None and len(data) == 1)

    # ------------------------------------------------------------------------------------------
    # Arrays for the vectorized walks of `grammars.masking.token_walk`
    # ------------------------------------------------------------------------------------------
    @cached_property
    def key_tokens(self) -> KeyTokens:
        """Which tokens hold the punctuation that can begin or demand an object key: the tokens
        distinct-key masks (`MaskTable.allowed_with_keys`) check one by one."""
        arrays = self.walk_arrays
        is_comma, is_quote = arrays.columns == ord(","), arrays.columns == ord('"')  # [max_len, rows]; padding is 0
        has_comma, has_quote = is_comma.any(axis=0), is_quote.any(axis=0)
        beyond = arrays.max_len
        first_comma = np.where(has_comma, is_comma.argmax(axis=0), beyond)
        first_quote = np.where(has_quote, is_quote.argmax(axis=0), beyond)
        comma_first = np.zeros(self.size, dtype=bool)
        comma_first[arrays.ids] = first_comma < first_quote
        late_quote = is_quote[1:].any(axis=0)
        comma, comma_or_quote, comma_or_late_quote = (
            np.sort(arrays.ids[rows]) for rows in (has_comma, has_comma | has_quote, has_comma | late_quote)
        )
        return KeyTokens(comma, comma_or_quote, comma_or_late_quote, comma_first)

    @cached_property
    def walk_arrays(self) -> WalkArrays:
        return WalkArrays(self.token_bytes)


class KeyTokens(NamedTuple):
    """The tokens that can begin or demand an object key, as sorted int64 ids (a few thousand, so a
    check costs what they do, not the vocabulary): those holding a `,`; a `,` or a `"`; a `,` or a
    `"` past their first byte. And comma_first, bool[vocab.size]: a `,` before any `"` (outside a
    JSON string, only those can reach a key's position)."""

    comma: np.ndarray
    comma_or_quote: np.ndarray
    comma_or_late_quote: np.ndarray
    comma_first: np.ndarray


class WalkArrays:
    """Tokens with bytes, grouped by first byte, as padded numpy arrays.

    `ids[first_offsets[b]:first_offsets[b+1]]` are the tokens starting with byte b; `columns` holds
    their bytes padded with zeros, position by position ([max_len, num_tokens]); `lengths` their lengths.
    """

    def __init__(self, token_bytes: Sequence[bytes | None]) -> None:
        entries = sorted(((data, i) for i, data in enumerate(token_bytes) if data), key=lambda e: (e[0][0], -len(e[0])))
        self.ids = np.array([i for _, i in entries], dtype=np.int64)
        self.lengths = np.array([len(d) for d, _ in entries], dtype=np.int32)
        #: The longest token, in bytes.
        self.max_len = int(self.lengths.max()) if len(entries) else 1
        padded = np.zeros((len(entries), self.max_len), dtype=np.uint8)  # [num_tokens, max_len]
        for row, (data, _) in enumerate(entries):
            padded[row, : len(data)] = np.frombuffer(data, dtype=np.uint8)
        #: [max_len, num_tokens]: byte p of every token in `columns[p]`, contiguous for 1-D gathers.
        self.columns = np.ascontiguousarray(padded.T)
        firsts = padded[:, 0] if len(entries) else np.zeros(0, dtype=np.uint8)
        self.first_offsets = np.searchsorted(firsts, np.arange(257)).astype(np.int64)
        #: First byte of every token id (256 for tokens without bytes), for masks by first byte.
        self.first_byte_of_id = np.full(len(token_bytes), 256, dtype=np.int64)
        self.first_byte_of_id[self.ids] = firsts
        #: Row of every token id in the arrays above (-1 for tokens without bytes: never looked up).
        self.row_of_id = np.full(len(token_bytes), -1, dtype=np.int64)
        self.row_of_id[self.ids] = np.arange(len(entries), dtype=np.int64)

    def rows_starting_with(self, byte_mask: np.ndarray) -> np.ndarray:
        """Row indices of the tokens whose first byte is set in `byte_mask` (bool[256])."""
        bytes_ = np.flatnonzero(byte_mask)
        if bytes_.size == 0:
            return np.zeros(0, dtype=np.int64)
        starts, ends = self.first_offsets[bytes_], self.first_offsets[bytes_ + 1]
        keep = ends > starts
        starts, ends = starts[keep], ends[keep]
        if starts.size == 0:
            return np.zeros(0, dtype=np.int64)
        lengths = ends - starts
        # concatenated aranges: row = start of its run + position inside the run
        run_of = np.repeat(np.arange(starts.size), lengths)
        offsets_in_run = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        return starts[run_of] + offsets_in_run
