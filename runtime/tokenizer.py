"""Text <-> token ids for one model, and the exact bytes behind every token id.

`Tokenizer` wraps a Hugging Face `tokenizers.Tokenizer` (built by a loader from a `tokenizer.json` or
from GGUF metadata) and adds what the rest of Stencil needs beyond encode/decode:

- `token_bytes`: the bytes each id decodes to, which the grammar engine walks to compute token masks;
- `eos_token_ids`: every id that ends a generation (a model may have several, see
  `end_of_generation_ids`);
- `DetokenizeStream`: text deltas for streaming that never split a UTF-8 character;
- `apply_chat_template`: the model's chat template (`runtime.chat_template`).

Token bytes, end-of-generation ids and the decoder family come from `grammars.masking.token_decoding`,
the one owner of "token id -> exact bytes", so the grammar engine and the engine decode alike.

Chat prompts are encoded so that only the template's own markers become control tokens: text from
messages and template variables is read as plain text even when it spells `<|im_start|>` (see
`runtime.chat_template.RenderedPrompt`).
"""

from __future__ import annotations

import codecs
import json
import operator
from collections.abc import Iterable, Mapping, Sequence
from functools import cached_property
from typing import Any

import tokenizers

from grammars.errors import GrammarError
from grammars.masking.token_decoding import (
    END_OF_GENERATION_TEXTS,
    DecoderKind,
    TokenDecoding,
    byte_level_alphabet,
    end_of_generation_ids,
)
from runtime.chat_template import CHATML_TEMPLATE, ChatTemplate, RenderedPrompt
from runtime.errors import CorruptModelError, PromptTooLongError, RequestError, UnsupportedModelError

# The token-bytes names are re-exported: loaders and tests know them as part of the runtime tokenizer.
__all__ = [
    "END_OF_GENERATION_TEXTS",
    "DecoderKind",
    "DetokenizeStream",
    "Tokenizer",
    "byte_level_alphabet",
    "end_of_generation_ids",
]


#: Normalizers and pre-tokenizers that only add or relabel text (a prepended `▁`, `▁` for a space,
#: the byte-level alphabet) or split it without dropping any: after them every byte of the text is
#: still in some token. Anything else (NFC, lowercasing, whitespace splitting) may shrink the text.
_TEXT_KEEPING_STEPS = frozenset({"Prepend", "Replace", "ByteLevel", "Metaspace", "Digits", "Punctuation", "Split"})


def _keeps_every_byte(step: Any) -> bool:
    """Whether a normalizer or pre-tokenizer (its JSON) leaves at least as many bytes as it is given."""
    if step is None:
        return True
    kind = step.get("type")
    if kind == "Sequence":
        return all(_keeps_every_byte(inner) for inner in step.get("normalizers") or step.get("pretokenizers") or ())
    if kind == "Replace":
        literal = step.get("pattern", {}).get("String")
        return literal is not None and len(step.get("content", "").encode()) >= len(literal.encode())
    return kind in _TEXT_KEEPING_STEPS and step.get("behavior") != "Removed"


def _stop_prepending(pre_tokenizer: Any) -> None:
    """Turn SentencePiece's `prepend_scheme: first` off in a pre-tokenizer's JSON, in place."""
    if not isinstance(pre_tokenizer, dict):
        return
    if pre_tokenizer.get("type") == "Metaspace" and pre_tokenizer.get("prepend_scheme") == "first":
        pre_tokenizer["prepend_scheme"] = "never"
    for inner in pre_tokenizer.get("pretokenizers") or ():
        _stop_prepending(inner)


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
        decoding: its `TokenDecoding` (token bytes and decoder family), the one grammars also reads.
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
        try:
            self.decoding = TokenDecoding(backend)
        except GrammarError as exc:
            raise UnsupportedModelError(str(exc), source) from exc
        self.vocab_size = self.decoding.vocab_size
        for name, token_id in [("bos", bos_token_id), ("pad", pad_token_id), *(("eos", i) for i in eos_token_ids)]:
            if token_id is not None and not 0 <= token_id < self.vocab_size:
                raise CorruptModelError(
                    f"{name} token id {token_id} is outside the vocabulary of {self.vocab_size}", source
                )
        self.eos_token_ids: tuple[int, ...] = tuple(eos_token_ids)
        self.bos_token_id = bos_token_id
        self.pad_token_id = pad_token_id
        self._chat_template_source = chat_template
        self.special_ids = self.decoding.special_ids
        self.decoder_kind = self.decoding.kind
        self.strips_leading_space = self.decoding.strips_leading_space

    @property
    def chat_template(self) -> str | None:
        """The checkpoint's Jinja2 chat template, None when it has none (then ChatML is used)."""
        return self._chat_template_source

    @property
    def eos_token_id(self) -> int | None:
        """The primary end-of-sequence id (the one the checkpoint declares), None when there is none."""
        return self.eos_token_ids[0] if self.eos_token_ids else None

    @property
    def decoded_bytes(self) -> list[bytes]:
        """The bytes each id contributes to `decode(..., skip_special_tokens=False)` (see `TokenDecoding`)."""
        return self.decoding.decoded_bytes

    @property
    def token_bytes(self) -> list[bytes | None]:
        """The exact bytes each id stands for, None for special tokens (see `TokenDecoding`)."""
        return self.decoding.token_bytes

    @cached_property
    def max_bytes_per_token(self) -> int | None:
        """The most bytes of text one token can stand for; None when this tokenizer admits no bound.

        A text of N UTF-8 bytes then has at least ceil(N / max_bytes_per_token) tokens, which lets a
        prompt far past the context window be refused before encoding it (seconds for megabytes).
        The bound holds only where every byte of the text lands in some token: text-keeping normalizers
        and pre-tokenizers (`_keeps_every_byte`), a BPE model that does not fuse runs of unknown
        characters into one token, and no added token that swallows the whitespace around it. A token
        then covers its decoded bytes, an unknown one a single character (at most 4 bytes).
        """
        # A step's pickle state is its JSON; `backend.to_str()` would serialize the whole vocabulary.
        normalizer = json.loads(self.backend.normalizer.__getstate__()) if self.backend.normalizer else None
        pre_tokenizer = json.loads(self.backend.pre_tokenizer.__getstate__()) if self.backend.pre_tokenizer else None
        model = self.backend.model
        if (
            not isinstance(model, tokenizers.models.BPE)
            or (model.fuse_unk and model.unk_token is not None and not model.byte_fallback)
            or not (_keeps_every_byte(normalizer) and _keeps_every_byte(pre_tokenizer))
            or any(token.lstrip or token.rstrip for token in self.backend.get_added_tokens_decoder().values())
        ):
            return None
        return max(4, *map(len, self.decoded_bytes))

    def encode(self, text: str, *, add_special_tokens: bool = False, parse_special_tokens: bool = True) -> list[int]:
        """Token ids for `text`, exactly as Hugging Face tokenizes it.

        By default special-token strings in the text (e.g. "<|im_end|>") become their special ids, as in
        HF, so never pass untrusted text through here with `parse_special_tokens=True` to build a prompt:
        `apply_chat_template` reads message content as text.

        Args:
            text: the text to encode.
            add_special_tokens: add what the model's post-processor adds (e.g. BOS for Llama 2).
            parse_special_tokens: False reads special-token strings as plain text.

        Raises:
            RequestError: `text` is not a str (field "text").
        """
        if not isinstance(text, str):
            raise RequestError(f"expected a str, got {type(text).__name__}", "text")
        backend = self.backend if parse_special_tokens else self._plain_backends[0]
        return backend.encode(text, add_special_tokens=add_special_tokens).ids

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
            control_texts=frozenset(self.backend.id_to_token(token_id) or "" for token_id in self.special_ids) - {""},
        )

    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        add_generation_prompt: bool = True,
        tokenize: bool = False,
        context_window: int | None = None,
        **extra: Any,
    ) -> str | list[int]:
        """Render `messages` with the model's chat template (ChatML when the model has none).

        Only the template's own markers become control tokens: message texts and `extra` values are
        encoded as plain text even where they spell a special token (see `RenderedPrompt`).

        Args:
            messages: dicts with "role" and "content" (see `runtime.chat_template.validate_messages`).
            add_generation_prompt: end with the header that opens the assistant's turn.
            tokenize: return token ids instead of text.
            context_window: with `tokenize`, the context window the prompt is for: a prompt whose UTF-8
                length alone shows it has at least that many tokens (no room left to generate) is
                refused before it is encoded (see `max_bytes_per_token`). None: no check here.
            **extra: more template variables (e.g. `tools`, `documents`), passed through as HF does.

        Returns:
            The prompt text, or its token ids when `tokenize` is true. Where no message spells a special
            token, both equal Hugging Face's `apply_chat_template`.

        Raises:
            RequestError: malformed messages, or the template rejects the conversation.
            ChatTemplateError: the template does not compile or fails while rendering.
            PromptTooLongError: the prompt cannot fit `context_window` (`num_prompt_tokens` is then
                the lower bound its length gives, field "prompt").
        """
        prompt = self._chat_template.render_prompt(messages, add_generation_prompt=add_generation_prompt, **extra)
        if not tokenize:
            return prompt.restore(prompt.text)
        if context_window is not None and self.max_bytes_per_token is not None:
            num_bytes = len(prompt.restore(prompt.text).encode("utf-8", errors="surrogatepass"))
            min_num_tokens = -(-num_bytes // self.max_bytes_per_token)
            if min_num_tokens >= context_window:  # the engine's rule: a prompt leaves room for one token
                raise PromptTooLongError(min_num_tokens, context_window, is_lower_bound=True)
        return self._encode_prompt(prompt)

    def _encode_prompt(self, prompt: RenderedPrompt) -> list[int]:
        """Token ids of a rendered chat prompt: the template's control tokens, and text between them.

        The backend splits `prompt.text` at the control tokens it finds, all of them the template's (no
        caller text in it spells one); a stretch without placeholders keeps the backend's ids, so the
        result is Hugging Face's, and one with placeholders is encoded with special tokens read as text.
        """
        encoding = self.backend.encode(prompt.text, add_special_tokens=False)
        control = [
            (index, start, end)
            for index, (token_id, (start, end)) in enumerate(zip(encoding.ids, encoding.offsets, strict=True))
            # an unknown character's <unk> is special too, but it is text: the template's markers spell themselves
            if token_id in self.special_ids and (self.backend.id_to_token(token_id) or "\0") in prompt.text[start:end]
        ]
        token_ids: list[int] = []
        next_index = stretch_start = 0
        for index, start, end in [*control, (len(encoding.ids), len(prompt.text), len(prompt.text))]:
            stretch = prompt.text[stretch_start:start]
            restored = prompt.restore(stretch)
            if restored == stretch:
                token_ids += encoding.ids[next_index:index]
            elif restored:
                plain = self._plain_backends[0 if stretch_start == 0 else 1]
                token_ids += plain.encode(restored, add_special_tokens=False).ids
            token_ids += encoding.ids[index : index + 1]
            next_index, stretch_start = index + 1, end
        return token_ids

    @cached_property
    def _plain_backends(self) -> tuple[tokenizers.Tokenizer, tokenizers.Tokenizer]:
        """Copies of the backend that read special-token texts as plain text: one for the text that
        starts a prompt, one for text after a control token (where `prepend_scheme: first` adds no
        `▁`, as the backend does for a split that does not start the input)."""
        spec = json.loads(self.backend.to_str())
        at_start = tokenizers.Tokenizer.from_str(json.dumps(spec))
        _stop_prepending(spec.get("pre_tokenizer"))
        after_control = tokenizers.Tokenizer.from_str(json.dumps(spec))
        for backend in (at_start, after_control):
            backend.encode_special_tokens = True
        return at_start, after_control


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
