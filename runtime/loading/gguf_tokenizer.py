"""A `Tokenizer` from GGUF metadata, equal to the one Hugging Face builds from `tokenizer.json`.

A GGUF carries the vocabulary (`tokenizer.ggml.tokens`, `token_type`, `merges` or `scores`) and names
its pre-tokenizer (`tokenizer.ggml.pre`), but not the normalizer / pre-tokenizer / decoder pipeline;
we rebuild that pipeline per model family, as the family's own `tokenizer.json` states it:

- `gpt2` models (byte-level BPE): the split regex and normalizer per `tokenizer.ggml.pre`
  (`_BYTE_LEVEL_PIPELINES`); SmolLM2's "smollm" is plain `ByteLevel(add_prefix_space=False)`, the
  same as its reference `tokenizer.json` (tested token for token).
- `llama` models (SentencePiece BPE with byte fallback): `Metaspace` pre-tokenizer, `▁`/byte-fallback
  decoder, as transformers' `LlamaTokenizer` (non-legacy). Files without merges get them from the
  token scores, highest-scoring merged piece first.

Control and unknown tokens become special added tokens, user-defined ones plain added tokens, so
their text in the input maps to their id, as in llama.cpp and HF.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import tokenizers
from gguf import TokenType
from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, processors

from runtime.errors import CorruptModelError, UnsupportedModelError
from runtime.loading.gguf_metadata import GGUFMetadata
from runtime.tokenizer import Tokenizer, end_of_generation_ids

__all__ = ["tokenizer_from_gguf"]

_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@dataclass(frozen=True)
class _BytePipeline:
    """How a byte-level model's text is split before BPE; None split = GPT-2's built-in regex."""

    split_regex: str | None = None
    is_nfc_normalized: bool = False
    #: Llama 3 looks a whole pre-token up in the vocabulary before merging (HF `ignore_merges`).
    ignores_merges: bool = False


#: `tokenizer.ggml.pre` -> pipeline, as each family's reference `tokenizer.json` has it.
_BYTE_LEVEL_PIPELINES = {
    "gpt-2": _BytePipeline(),
    "smollm": _BytePipeline(),
    "llama-bpe": _BytePipeline(split_regex=_LLAMA3_SPLIT, ignores_merges=True),
    "qwen2": _BytePipeline(split_regex=_QWEN2_SPLIT, is_nfc_normalized=True),
}
_SPECIAL_TYPES = (TokenType.CONTROL, TokenType.UNKNOWN)


def _vocab(tokens: Sequence[str], source: str) -> dict[str, int]:
    vocab: dict[str, int] = {}
    for token_id, token in enumerate(tokens):
        if token in vocab:
            raise CorruptModelError(
                f"token {token!r} appears twice in tokenizer.ggml.tokens (ids {vocab[token]}, {token_id})", source
            )
        vocab[token] = token_id
    return vocab


def _merges(metadata: GGUFMetadata, tokens: Sequence[str], token_types: Sequence[int]) -> list[tuple[str, str]]:
    listed = metadata.get("tokenizer.ggml.merges")
    if listed is not None:
        pairs = []
        for merge in listed:
            left, space, right = merge.partition(" ")
            if not space or " " in right:
                raise CorruptModelError(f"merge {merge!r} is not two tokens separated by a space", metadata.source)
            pairs.append((left, right))
        return pairs
    scores = metadata.get("tokenizer.ggml.scores")
    if scores is None or len(scores) != len(tokens):
        raise CorruptModelError(
            "a SentencePiece vocabulary needs tokenizer.ggml.merges or tokenizer.ggml.scores", metadata.source
        )
    return _merges_from_scores(tokens, token_types, scores)


def _merges_from_scores(
    tokens: Sequence[str], token_types: Sequence[int], scores: Sequence[float]
) -> list[tuple[str, str]]:
    """SentencePiece BPE merges the best-scoring piece first; every split of a normal token into two
    vocabulary pieces is a merge ranked by the merged token's score (ties: longer left piece first,
    as transformers' `generate_merges`)."""
    ids = {token: token_id for token_id, token in enumerate(tokens)}
    candidates = []
    for token, token_type, score in zip(tokens, token_types, scores, strict=True):
        if token_type != TokenType.NORMAL:
            continue
        splits = [(token[:i], token[i:]) for i in range(1, len(token)) if token[:i] in ids and token[i:] in ids]
        splits.sort(key=lambda pair: (ids[pair[0]], ids[pair[1]]))
        candidates += [(left, right, score) for left, right in splits]
    candidates.sort(key=lambda merge: (merge[2], len(merge[0]), len(merge[1])), reverse=True)
    return [(left, right) for left, right, _ in candidates]


def _byte_level_backend(
    metadata: GGUFMetadata, vocab: dict[str, int], merges: list[tuple[str, str]]
) -> tokenizers.Tokenizer:
    pre_name = metadata.get("tokenizer.ggml.pre")
    pipeline = _BYTE_LEVEL_PIPELINES.get(pre_name)
    if pipeline is None:
        raise UnsupportedModelError(
            f"byte-level pre-tokenizer {pre_name!r} (tokenizer.ggml.pre); "
            f"supported: {', '.join(sorted(_BYTE_LEVEL_PIPELINES))}",
            metadata.source,
        )
    backend = tokenizers.Tokenizer(
        models.BPE(vocab, merges, fuse_unk=False, byte_fallback=False, ignore_merges=pipeline.ignores_merges)
    )
    if pipeline.is_nfc_normalized:
        backend.normalizer = normalizers.NFC()
    if pipeline.split_regex is None:
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    else:
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(pipeline.split_regex), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
            ]
        )
    backend.decoder = decoders.ByteLevel()
    return backend


def _sentencepiece_backend(
    metadata: GGUFMetadata, vocab: dict[str, int], merges: list[tuple[str, str]], tokens: Sequence[str]
) -> tokenizers.Tokenizer:
    unknown_id = metadata.get_int("tokenizer.ggml.unknown_token_id", 0)
    unknown_token = tokens[unknown_id] if unknown_id is not None and unknown_id < len(tokens) else None
    backend = tokenizers.Tokenizer(
        models.BPE(vocab, merges, unk_token=unknown_token, fuse_unk=True, byte_fallback=True)
    )
    has_space_prefix = bool(metadata.get("tokenizer.ggml.add_space_prefix", True))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement="▁", prepend_scheme="first" if has_space_prefix else "never", split=False
    )
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    backend.decoder = decoders.Sequence([*steps, decoders.Strip(" ", 1, 0)] if has_space_prefix else steps)
    return backend


def _post_processor(
    tokens: Sequence[str], added_ids: Sequence[tuple[str, int | None]], source: str
) -> processors.TemplateProcessing:
    """BOS / EOS around each sequence; `added_ids` are ("BOS" or "EOS", id) pairs, in order."""
    checked: list[tuple[str, int]] = []
    for name, token_id in added_ids:
        if token_id is None or not 0 <= token_id < len(tokens):
            raise CorruptModelError(f"the tokenizer adds {name} but its id is {token_id}", source)
        checked.append((name, token_id))
    prefix = [tokens[token_id] for name, token_id in checked if name == "BOS"]
    suffix = [tokens[token_id] for name, token_id in checked if name == "EOS"]
    return processors.TemplateProcessing(
        single=[*prefix, "$A:0", *suffix],
        pair=[*prefix, "$A:0", *suffix, *prefix, "$B:1", *suffix],
        special_tokens=[(tokens[token_id], token_id) for _, token_id in checked],
    )


def tokenizer_from_gguf(metadata: GGUFMetadata) -> Tokenizer:
    """Build the model's tokenizer from its GGUF metadata.

    End-of-generation ids: the file's EOS (`tokenizer.ggml.eos_token_id`), then its EOT/EOM ids, then
    the special tokens named in `runtime.tokenizer.END_OF_GENERATION_TEXTS` (SmolLM2: 2 `<|im_end|>`,
    then 0 `<|endoftext|>`).

    Raises:
        UnsupportedModelError: a tokenizer model other than "gpt2" / "llama", or an unknown pre-tokenizer.
        CorruptModelError: missing or inconsistent vocabulary metadata.
    """
    source = metadata.source
    kind = metadata.get("tokenizer.ggml.model")
    tokens = metadata.get("tokenizer.ggml.tokens")
    if not tokens:
        raise CorruptModelError("missing tokenizer.ggml.tokens", source)
    token_types = metadata.get("tokenizer.ggml.token_type") or [TokenType.NORMAL] * len(tokens)
    if len(token_types) != len(tokens):
        raise CorruptModelError(f"{len(token_types)} token types for {len(tokens)} tokens", source)
    vocab = _vocab(tokens, source)
    if kind == "gpt2":
        backend = _byte_level_backend(metadata, vocab, _merges(metadata, tokens, token_types))
    elif kind == "llama":
        backend = _sentencepiece_backend(metadata, vocab, _merges(metadata, tokens, token_types), tokens)
    else:
        raise UnsupportedModelError(f"tokenizer model {kind!r} (tokenizer.ggml.model); supported: gpt2, llama", source)
    backend.add_special_tokens(
        [
            AddedToken(token, special=True, normalized=False)
            for token, token_type in zip(tokens, token_types, strict=True)
            if token_type in _SPECIAL_TYPES
        ]
    )
    backend.add_tokens(
        [
            AddedToken(token, special=False, normalized=False)
            for token, token_type in zip(tokens, token_types, strict=True)
            if token_type == TokenType.USER_DEFINED
        ]
    )
    bos_id = metadata.get_int("tokenizer.ggml.bos_token_id")
    eos_id = metadata.get_int("tokenizer.ggml.eos_token_id")
    add_bos = bool(metadata.get("tokenizer.ggml.add_bos_token", kind == "llama"))
    add_eos = bool(metadata.get("tokenizer.ggml.add_eos_token", False))
    added_ids = [("BOS", bos_id)] * add_bos + [("EOS", eos_id)] * add_eos
    if added_ids:
        backend.post_processor = _post_processor(tokens, added_ids, source)
    declared_eos = [
        eos_id,
        metadata.get_int("tokenizer.ggml.eot_token_id"),
        metadata.get_int("tokenizer.ggml.eom_token_id"),
    ]
    return Tokenizer(
        backend,
        eos_token_ids=end_of_generation_ids(backend, declared_eos),
        bos_token_id=bos_id,
        pad_token_id=metadata.get_int("tokenizer.ggml.padding_token_id"),
        chat_template=metadata.get("tokenizer.chat_template"),
        source=source,
    )
