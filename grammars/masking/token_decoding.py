"""Token id -> exact bytes, and end-of-generation ids, for a Hugging Face `tokenizers.Tokenizer`.

The one owner of this mapping: `grammars.Vocabulary.from_tokenizer` and the runtime's `Tokenizer` both
use it, so the grammar engine walks exactly the bytes the engine decodes.

Two decoder families are understood, the ones the supported models use: byte-level BPE (GPT-2's
byte-to-unicode alphabet: SmolLM2, Llama 3, Qwen2) and SentencePiece-style BPE with byte fallback
(`▁` for a space, `<0x0A>` for a raw byte: Llama 2, Mistral, Mixtral). `tokenizers` is only duck-typed
here, so importing `grammars` stays free of it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from enum import Enum
from functools import cached_property
from typing import TYPE_CHECKING, Any

from grammars.errors import GrammarError

if TYPE_CHECKING:
    import tokenizers

__all__ = [
    "END_OF_GENERATION_TEXTS",
    "DecoderKind",
    "TokenDecoding",
    "byte_level_alphabet",
    "end_of_generation_ids",
]

#: Texts of special tokens that end a turn or a document in the model families we load. llama.cpp treats
#: the same set as "end of generation" whatever the metadata's single EOS id says, and so do we: an
#: instruct model that emits `<|endoftext|>` instead of `<|im_end|>` has still finished.
END_OF_GENERATION_TEXTS = frozenset(
    {
        "<|endoftext|>",
        "<|im_end|>",
        "<|eot_id|>",
        "<|eom_id|>",
        "<|end_of_text|>",
        "<|end|>",
        "<end_of_turn>",
        "<eos>",
        "<|return|>",
        "<EOT>",
        "</s>",
    }
)

_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


class DecoderKind(Enum):
    """How a tokenizer's token strings map to bytes."""

    #: GPT-2's byte-to-unicode alphabet: every byte is spelled as one printable character.
    BYTE_LEVEL = "byte_level"
    #: SentencePiece: `▁` stands for a space, `<0xNN>` tokens are raw bytes (byte fallback).
    SENTENCEPIECE = "sentencepiece"


def byte_level_alphabet() -> dict[int, str]:
    """GPT-2's byte -> printable character table that byte-level BPE vocabularies are spelled in.

    Returns:
        A dict from each of the 256 byte values to its one-character spelling.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    spelling = {byte: chr(byte) for byte in printable}
    next_code = 256
    for byte in range(256):
        if byte not in spelling:
            spelling[byte] = chr(next_code)
            next_code += 1
    return spelling


_BYTE_OF_CHAR = {char: byte for byte, char in byte_level_alphabet().items()}


def end_of_generation_ids(backend: tokenizers.Tokenizer, declared_ids: Iterable[int | None] = ()) -> tuple[int, ...]:
    """The ids that end a generation: the ones the checkpoint declares, then the special tokens whose
    text is a known end-of-turn or end-of-document marker (`END_OF_GENERATION_TEXTS`).

    Args:
        backend: the model's tokenizer.
        declared_ids: EOS ids from the checkpoint's metadata, primary first; None entries are skipped.

    Returns:
        Distinct ids, declared ones first in their order (so `[0]` is the primary EOS).
    """
    ids = [token_id for token_id in declared_ids if token_id is not None]
    for token_id, token in sorted(backend.get_added_tokens_decoder().items()):
        if token.special and token.content in END_OF_GENERATION_TEXTS:
            ids.append(token_id)
    return tuple(dict.fromkeys(ids))


def _decoder_steps(decoder_state: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    if decoder_state.get("type") == "Sequence":
        return [step for inner in decoder_state["decoders"] for step in _decoder_steps(inner)]
    return [decoder_state]


class TokenDecoding:
    """How one tokenizer turns token ids into bytes, read from its decoder.

    Args:
        backend: the `tokenizers.Tokenizer`.

    Raises:
        GrammarError: a decoder that is neither byte-level nor SentencePiece-style.

    Attributes:
        kind: the decoder family (`DecoderKind`).
        strips_leading_space: `decode` drops one leading space (SentencePiece's prepended `▁`).
        vocab_size: highest token id + 1.
        special_ids: ids of special added tokens (control tokens): never part of a text.
    """

    def __init__(self, backend: tokenizers.Tokenizer) -> None:
        self._backend = backend
        # A decoder's pickle state is its JSON; `backend.to_str()` would serialize the whole vocabulary.
        steps = _decoder_steps(json.loads(backend.decoder.__getstate__())) if backend.decoder else []
        step_types = {step.get("type") for step in steps}
        if "ByteLevel" in step_types:
            self.kind = DecoderKind.BYTE_LEVEL
        elif step_types & {"ByteFallback", "Metaspace"}:
            self.kind = DecoderKind.SENTENCEPIECE
        else:
            raise GrammarError(
                f"tokenizer decoder {sorted(map(str, step_types)) or 'none'} is neither byte-level nor "
                "SentencePiece-style"
            )
        self.strips_leading_space = any(
            (step.get("type") == "Strip" and step.get("content") == " " and step.get("start", 0) > 0)
            or (step.get("type") == "Metaspace" and step.get("prepend_scheme", "always") != "never")
            for step in steps
        )
        self.vocab_size: int = max(backend.get_vocab(with_added_tokens=True).values()) + 1
        self.special_ids: frozenset[int] = frozenset(
            token_id for token_id, token in backend.get_added_tokens_decoder().items() if token.special
        )

    def _piece_bytes(self, token: str) -> bytes:
        if self.kind is DecoderKind.BYTE_LEVEL:
            # As the ByteLevel decoder does: a token spelled outside the alphabet is taken literally.
            if all(char in _BYTE_OF_CHAR for char in token):
                return bytes(_BYTE_OF_CHAR[char] for char in token)
            return token.encode("utf-8")
        byte_match = _BYTE_TOKEN.fullmatch(token)
        if byte_match:
            return bytes([int(byte_match.group(1), 16)])
        return token.replace("▁", " ").encode("utf-8")

    @cached_property
    def decoded_bytes(self) -> list[bytes]:
        """The bytes each id contributes to `decode(..., skip_special_tokens=False)`, special tokens
        included (their text). b"" for ids with no token."""
        pieces = []
        for token_id in range(self.vocab_size):
            token = self._backend.id_to_token(token_id)
            pieces.append(b"" if token is None else self._piece_bytes(token))
        return pieces

    @cached_property
    def token_bytes(self) -> list[bytes | None]:
        """The exact bytes each id stands for, None for special tokens and ids with no token.

        SentencePiece tokens keep their leading space (`▁Hello` is b" Hello"): `decode` drops the one
        space at the very start of a text, the grammar engine sees the raw bytes.
        """
        return [
            None if token_id in self.special_ids or self._backend.id_to_token(token_id) is None else piece
            for token_id, piece in enumerate(self.decoded_bytes)
        ]
