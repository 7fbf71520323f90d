"""Text <-> token ids for one model, and the exact bytes behind every token id.

`Tokenizer` wraps a Hugging Face `tokenizers.Tokenizer` (built by a loader from a `tokenizer.json` or
from GGUF metadata) and adds what the rest of Stencil needs beyond encode/decode:

- `token_bytes`: the bytes each id decodes to, which the grammar engine walks to compute token masks;
- `eos_token_ids`: every id that ends a generation (a model may have several, see
  `end_of_generation_ids`);
- `DetokenizeStream`: text deltas for streaming that never split a UTF-8 character;
- `apply_chat_template`: the model's chat template (`runtime.chat_template`).

Two decoder families are understood, the ones the supported models use: byte-level BPE (GPT-2's
byte-to-unicode alphabet: SmolLM2, Llama 3, Qwen2) and SentencePiece-style BPE with byte fallback
(`▁` for a space, `<0x0A>` for a raw byte: Llama 2, Mistral, Mixtral).
"""

from __future__ import annotations

import codecs
import json
import operator
import re
from collections.abc import Iterable, Mapping, Sequence
from enum import Enum
from functools import cached_property
from typing import Any

import tokenizers

from runtime.chat_template import CHATML_TEMPLATE, ChatTemplate
from runtime.errors import CorruptModelError, RequestError, UnsupportedModelError

__all__ = [
    "END_OF_GENERATION_TEXTS",
    "DecoderKind",
    "DetokenizeStream",
    "Tokenizer",
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


def end_of_generation_ids(backend: tokenizers.Tokenizer, declared_ids: Iterable[int | None]) -> tuple[int, ...]:
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


class Tokenizer:
    """A model's tokenizer: encode, decode, stream-decode, chat template, and per-token bytes.

    Built by the loaders (`runtime.loading`); the backend's normalizer, pre-tokenizer and decoder
    define the behaviour, so encoding equals Hugging Face's for the same `tokenizer.json`.

    Args:
        backend: the `tokenizers.Tokenizer` that does the work.
        eos_token_ids: ids that end a generation, primary first (see `end_of_generation_ids`).
        bos_token_id: the beginning-of-sequence id, None when the model has none.
        pad_token_id: the padding id, None when the model has none.
        chat_template: Jinja2 chat template source; None falls back to `CHATML_TEMPLATE`.
        source: where the tokenizer came from, for error messages.

    Raises:
        CorruptModelError: a special id outside the vocabulary.
        UnsupportedModelError: a decoder that is neither byte-level nor SentencePiece-style.

    Attributes:
        backend: the wrapped `tokenizers.Tokenizer`.
        vocab_size: highest token id + 1. The model's logits may be wider (padded vocabularies).
        eos_token_ids, bos_token_id, pad_token_id: as given.
        special_ids: ids of special added tokens (control tokens): never part of generated text.
        decoder_kind: how token strings map to bytes (`DecoderKind`).
        strips_leading_space: `decode` drops one leading space (SentencePiece's prepended `▁`).
    """

    def __init__(
        self,
        backend: tokenizers.Tokenizer,
        *,
        eos_token_ids: Sequence[int],
        bos_token_id: int | None = None,
        pad_token_id: int | None = None,
        chat_template: str | None = None,
        source: str = "",
    ) -> None:
        self.backend = backend
        self.vocab_size: int = max(backend.get_vocab(with_added_tokens=True).values()) + 1
        for name, token_id in [("bos", bos_token_id), ("pad", pad_token_id), *(("eos", i) for i in eos_token_ids)]:
            if token_id is not None and not 0 <= token_id < self.vocab_size:
                raise CorruptModelError(
                    f"{name} token id {token_id} is outside the vocabulary of {self.vocab_size}", source
                )
        self.eos_token_ids: tuple[int, ...] = tuple(eos_token_ids)
        self.bos_token_id = bos_token_id
        self.pad_token_id = pad_token_id
        self._chat_template_source = chat_template
        self.special_ids: frozenset[int] = frozenset(
            token_id for token_id, token in backend.get_added_tokens_decoder().items() if token.special
        )
        # A decoder's pickle state is its JSON; `backend.to_str()` would serialize the whole vocabulary.
        decoder_steps = _decoder_steps(json.loads(backend.decoder.__getstate__())) if backend.decoder else []
        self.decoder_kind = self._detect_decoder_kind(decoder_steps, source)
        self.strips_leading_space = any(
            (step.get("type") == "Strip" and step.get("content") == " " and step.get("start", 0) > 0)
            or (step.get("type") == "Metaspace" and step.get("prepend_scheme", "always") != "never")
            for step in decoder_steps
        )

    @staticmethod
    def _detect_decoder_kind(decoder_steps: list[Mapping[str, Any]], source: str) -> DecoderKind:
        step_types = {step.get("type") for step in decoder_steps}
        if "ByteLevel" in step_types:
            return DecoderKind.BYTE_LEVEL
        if step_types & {"ByteFallback", "Metaspace"}:
            return DecoderKind.SENTENCEPIECE
        raise UnsupportedModelError(
            f"tokenizer decoder {sorted(map(str, step_types)) or 'none'} is neither byte-level nor SentencePiece-style",
            source,
        )

    @property
    def chat_template(self) -> str | None:
        """The checkpoint's Jinja2 chat template, None when it has none (then ChatML is used)."""
        return self._chat_template_source

    @property
    def eos_token_id(self) -> int | None:
        """The primary end-of-sequence id (the one the checkpoint declares), None when there is none."""
        return self.eos_token_ids[0] if self.eos_token_ids else None

    def _piece_bytes(self, token: str) -> bytes:
        if self.decoder_kind is DecoderKind.BYTE_LEVEL:
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
            token = self.backend.id_to_token(token_id)
            pieces.append(b"" if token is None else self._piece_bytes(token))
        return pieces

    @cached_property
    def token_bytes(self) -> list[bytes | None]:
        """The exact bytes each id stands for, None for special tokens and ids with no token.

        SentencePiece tokens keep their leading space (`▁Hello` is b" Hello"): `decode` drops the one
        space at the very start of a text, the grammar engine sees the raw bytes.
        """
        return [
            None if token_id in self.special_ids or self.backend.id_to_token(token_id) is None else piece
            for token_id, piece in enumerate(self.decoded_bytes)
        ]

    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        """Token ids for `text`, exactly as Hugging Face tokenizes it.

        Special-token strings in the text (e.g. "<|im_end|>") become their special ids, as in HF; a chat
        template's output relies on that.

        Args:
            text: the text to encode.
            add_special_tokens: add what the model's post-processor adds (e.g. BOS for Llama 2).

        Raises:
            RequestError: `text` is not a str (field "text").
        """
        if not isinstance(text, str):
            raise RequestError(f"expected a str, got {type(text).__name__}", "text")
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def check_token_ids(self, token_ids: Sequence[int], field: str = "token_ids") -> list[int]:
        """`token_ids` as a list of Python ints, after checking each is an id of this vocabulary.

        Integer-like values (numpy or torch integer scalars) are accepted and converted.

        Raises:
            RequestError: not a sequence, or a non-integer or out-of-range id; `field` names it with its index.
        """
        if isinstance(token_ids, (str, bytes)) or not isinstance(token_ids, Iterable):
            raise RequestError(f"expected a sequence of token ids, got {type(token_ids).__name__}", field)
        checked = []
        for index, token_id in enumerate(token_ids):
            if isinstance(token_id, bool) or not hasattr(token_id, "__index__"):
                raise RequestError(f"expected an int token id, got {type(token_id).__name__}", f"{field}[{index}]")
            token_id = operator.index(token_id)
            if not 0 <= token_id < self.vocab_size:
                raise RequestError(
                    f"token id {token_id} is outside the vocabulary of {self.vocab_size}", f"{field}[{index}]"
                )
            checked.append(token_id)
        return checked

    def decode(self, token_ids: Sequence[int], *, skip_special_tokens: bool = False) -> str:
        """The text of `token_ids`, as Hugging Face decodes it (invalid UTF-8 becomes U+FFFD).

        Args:
            token_ids: ids to decode.
            skip_special_tokens: leave special tokens' text out.

        Raises:
            RequestError: an id that is not in the vocabulary (the backend would drop it silently).
        """
        return self.backend.decode(self.check_token_ids(token_ids), skip_special_tokens=skip_special_tokens)

    def detokenize_stream(self, *, skip_special_tokens: bool = False) -> DetokenizeStream:
        """A fresh incremental decoder for one generated sequence (see `DetokenizeStream`)."""
        return DetokenizeStream(self, skip_special_tokens=skip_special_tokens)

    @cached_property
    def _chat_template(self) -> ChatTemplate:
        def token_text(token_id: int | None) -> str | None:
            return None if token_id is None else self.backend.id_to_token(token_id)

        return ChatTemplate(
            self._chat_template_source or CHATML_TEMPLATE,
            special_tokens={"bos_token": token_text(self.bos_token_id), "eos_token": token_text(self.eos_token_id)},
        )

    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        add_generation_prompt: bool = True,
        tokenize: bool = False,
        **extra: Any,
    ) -> str | list[int]:
        """Render `messages` with the model's chat template (ChatML when the model has none).

        Args:
            messages: dicts with "role" and "content" (see `runtime.chat_template.validate_messages`).
            add_generation_prompt: end with the header that opens the assistant's turn.
            tokenize: return token ids (special tokens in the text become their ids) instead of text.
            **extra: more template variables (e.g. `tools`, `documents`), passed through as HF does.

        Returns:
            The prompt text, or its token ids when `tokenize` is true.

        Raises:
            RequestError: malformed messages, or the template rejects the conversation.
            ChatTemplateError: the template does not compile or fails while rendering.
        """
        text = self._chat_template.render(messages, add_generation_prompt=add_generation_prompt, **extra)
        return self.encode(text) if tokenize else text


class DetokenizeStream:
    """Incremental decoding for streaming: feed generated ids, get text deltas.

    Deltas never split a UTF-8 character: bytes of an incomplete character wait for the next token.
    The concatenation of all deltas and `flush()` equals `tokenizer.decode(ids)` for the same ids
    (byte-level tokenizers exactly; SentencePiece ones too, except that an invalid byte run becomes one
    U+FFFD here and one per byte there).

    Args:
        tokenizer: the tokenizer whose ids are fed.
        skip_special_tokens: leave special tokens' text out, as `decode(..., skip_special_tokens=True)`.
    """

    def __init__(self, tokenizer: Tokenizer, *, skip_special_tokens: bool = False) -> None:
        self._tokenizer = tokenizer
        self._skip_special_tokens = skip_special_tokens
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._is_at_start = True
        self.token_ids: list[int] = []

    def _emit(self, text: str) -> str:
        if self._is_at_start and text:
            self._is_at_start = False
            if self._tokenizer.strips_leading_space and text.startswith(" "):
                return text[1:]
        return text

    def push(self, token_id: int) -> str:
        """Append one id and return the text it completes ("" while a character is incomplete).

        Raises:
            RequestError: an id outside the vocabulary.
        """
        (token_id,) = self._tokenizer.check_token_ids([token_id], "token_id")
        self.token_ids.append(token_id)
        if self._skip_special_tokens and token_id in self._tokenizer.special_ids:
            return ""
        return self._emit(self._utf8.decode(self._tokenizer.decoded_bytes[token_id]))

    def flush(self) -> str:
        """End the stream: dangling bytes of an incomplete character come out as U+FFFD."""
        return self._emit(self._utf8.decode(b"", final=True))
