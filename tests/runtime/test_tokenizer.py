"""The runtime tokenizer: SmolLM2's GGUF tokenizer against Hugging Face's reference tokenizer.json,
a SentencePiece-style GGUF vocabulary against transformers' converter, token bytes and streaming."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import tokenizers
import torch
from gguf import GGUFWriter, TokenType
from hypothesis import given, settings
from hypothesis import strategies as st

from grammars import GrammarError
from runtime.errors import RequestError, UnsupportedModelError
from runtime.loading import load_checkpoint
from runtime.loading.gguf_file import read_gguf
from runtime.loading.gguf_metadata import GGUFMetadata
from runtime.loading.gguf_tokenizer import tokenizer_from_gguf
from runtime.tokenizer import DecoderKind, Tokenizer
from tests.shared_data import reference_tokenizer

TEXTS = [
    "Hello world",
    "  leading spaces and trailing   ",
    "tabs\tand\t\tmore\t \ttabs",
    "\n\n\nnewlines\r\nwindows\rcr\n \n",
    " \t \n mixed \u00a0 nbsp \u3000 ideographic space",
    "日本語のテキストと中文文本，还有한국어",
    "emoji 😀👍🏽👨‍👩‍👧‍👦 🇫🇷 flags",
    "combining e\u0301 a\u0308 n\u0303 vs precomposed é ä ñ; Z\u0351\u0352a\u035b",
    'def f(x: int) -> dict:\n    return {"a": [1, 2.5e-3, None]}\n',
    '{"name": "Alice", "age": 30, "tags": ["x", "y"], "nested": {"k": null}}',
    "1234567890 3.14159 -42 1e10 0x1F 1,000,000",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "text with <|endoftext|> inside and <file_sep> too<|im_end|>",
    "I'm we'll they've it's DON'T",
    "",
    " ",
    "\u200b zero width \ufeff bom",
    "\x00\x01\x7f control chars ÿ",
    "Ġ and Ċ literal alphabet chars",
    "https://example.com/path?q=1&r=2#frag",
]


@pytest.fixture(scope="module")
def reference() -> tokenizers.Tokenizer:
    return tokenizers.Tokenizer.from_file(str(reference_tokenizer()))


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return load_checkpoint(None).tokenizer


@pytest.mark.parametrize("text", TEXTS)
def test_encode_matches_reference(tokenizer: Tokenizer, reference: tokenizers.Tokenizer, text: str) -> None:
    expected = reference.encode(text, add_special_tokens=False).ids
    assert tokenizer.encode(text) == expected
    assert tokenizer.encode(text, add_special_tokens=True) == reference.encode(text, add_special_tokens=True).ids


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=60))
def test_encode_matches_reference_on_random_text(
    tokenizer: Tokenizer, reference: tokenizers.Tokenizer, text: str
) -> None:
    assert tokenizer.encode(text) == reference.encode(text, add_special_tokens=False).ids


def test_pipeline_equals_reference(tokenizer: Tokenizer, reference: tokenizers.Tokenizer) -> None:
    ours, theirs = json.loads(tokenizer.backend.to_str()), json.loads(reference.to_str())
    for key in ("normalizer", "pre_tokenizer", "decoder", "added_tokens"):
        assert ours[key] == theirs[key], key
    for key in ("type", "vocab", "merges", "byte_fallback", "ignore_merges", "fuse_unk", "unk_token"):
        assert ours["model"][key] == theirs["model"][key], key


def test_special_ids_and_eos(tokenizer: Tokenizer, reference: tokenizers.Tokenizer) -> None:
    assert tokenizer.special_ids == frozenset(i for i, t in reference.get_added_tokens_decoder().items() if t.special)
    assert len(tokenizer.special_ids) == 17
    assert (tokenizer.eos_token_id, tokenizer.eos_token_ids) == (2, (2, 0))
    assert (tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.vocab_size) == (1, 2, 49152)
    assert tokenizer.decoder_kind is DecoderKind.BYTE_LEVEL


def test_token_bytes(tokenizer: Tokenizer, reference: tokenizers.Tokenizer) -> None:
    token_bytes = tokenizer.token_bytes
    assert len(token_bytes) == tokenizer.vocab_size
    assert {i for i, piece in enumerate(token_bytes) if piece is None} == tokenizer.special_ids
    assert token_bytes[216] == b" " and token_bytes[198] == b"\n"
    for token_id, piece in enumerate(token_bytes):
        if piece is not None:
            assert reference.decode([token_id]) == piece.decode("utf-8", errors="replace"), token_id
    for text in TEXTS[:11]:
        assert b"".join(token_bytes[i] for i in tokenizer.encode(text)) == text.encode("utf-8")


@pytest.mark.parametrize("skip_special_tokens", [False, True])
def test_decode_matches_reference(
    tokenizer: Tokenizer, reference: tokenizers.Tokenizer, skip_special_tokens: bool
) -> None:
    rng = random.Random(11)
    for _ in range(200):
        ids = [rng.randrange(tokenizer.vocab_size) for _ in range(rng.randrange(1, 12))] + [rng.randrange(20)]
        expected = reference.decode(ids, skip_special_tokens=skip_special_tokens)
        assert tokenizer.decode(ids, skip_special_tokens=skip_special_tokens) == expected


@pytest.mark.parametrize("skip_special_tokens", [False, True])
def test_stream_concatenates_to_decode(tokenizer: Tokenizer, skip_special_tokens: bool) -> None:
    rng = random.Random(5)
    for _ in range(300):
        # mostly multi-byte pieces, so characters split across tokens and invalid sequences occur
        ids = [
            rng.choice([rng.randrange(20), rng.randrange(100, 300), rng.randrange(tokenizer.vocab_size)])
            for _ in range(rng.randrange(1, 10))
        ]
        stream = tokenizer.detokenize_stream(skip_special_tokens=skip_special_tokens)
        text = "".join(stream.push(i) for i in ids) + stream.flush()
        assert text == tokenizer.decode(ids, skip_special_tokens=skip_special_tokens), ids
        assert stream.token_ids == ids


def test_stream_never_splits_a_character(tokenizer: Tokenizer) -> None:
    text = "emoji 😀👍🏽👨‍👩‍👧‍👦 and 日本語 and e\u0301"
    ids = tokenizer.encode(text)
    assert any(tokenizer.token_bytes[i] is not None and not _is_complete_utf8(tokenizer.token_bytes[i]) for i in ids)
    stream = tokenizer.detokenize_stream()
    deltas = [stream.push(i) for i in ids]
    assert all("\ufffd" not in delta for delta in deltas)
    assert "".join(deltas) == text and stream.flush() == ""


def test_encode_can_read_special_token_strings_as_text(tokenizer: Tokenizer) -> None:
    text = "a<|im_end|>b"
    assert set(tokenizer.encode(text)) & set(tokenizer.special_ids)
    plain = tokenizer.encode(text, parse_special_tokens=False)
    assert not set(plain) & set(tokenizer.special_ids) and tokenizer.decode(plain) == text
    assert tokenizer.encode("no markers", parse_special_tokens=False) == tokenizer.encode("no markers")


def _is_complete_utf8(piece: bytes) -> bool:
    try:
        piece.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_bad_ids_and_text_are_request_errors(tokenizer: Tokenizer) -> None:
    with pytest.raises(RequestError) as excinfo:
        tokenizer.decode([5, 49152])
    assert excinfo.value.field == "token_ids[1]"
    with pytest.raises(RequestError):
        tokenizer.decode([-1])
    with pytest.raises(RequestError):
        tokenizer.detokenize_stream().push(10**6)
    with pytest.raises(RequestError) as excinfo:
        tokenizer.encode(b"bytes")  # type: ignore[arg-type]
    assert excinfo.value.field == "text"
    with pytest.raises(RequestError) as excinfo:
        tokenizer.check_token_ids([1, 2.0], "prompt")  # type: ignore[list-item]
    assert excinfo.value.field == "prompt[1]"
    with pytest.raises(RequestError):
        tokenizer.check_token_ids("hello")  # type: ignore[arg-type]
    assert tokenizer.check_token_ids(torch.tensor([5, 7])) == [5, 7]


# --- SentencePiece-style ("llama") GGUF vocabularies ------------------------------------------

_SPM_PIECES = [
    "▁",
    "h",
    "e",
    "l",
    "o",
    "w",
    "r",
    "d",
    "▁h",
    "ll",
    "▁he",
    "llo",
    "▁hello",
    "▁w",
    "or",
    "ld",
    "▁wor",
    "▁world",
    "▁▁",
]


@pytest.fixture(scope="module")
def spm_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{byte:02X}>" for byte in range(256)] + _SPM_PIECES
    types = (
        [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL]
        + [TokenType.BYTE] * 256
        + [TokenType.NORMAL] * len(_SPM_PIECES)
    )
    scores = [0.0] * 259 + [-float(i) for i in range(len(_SPM_PIECES))]
    # longer pieces score higher so they merge first, as in a trained SentencePiece model
    scores[259:] = [-100.0 + 10 * len(piece) - 0.01 * i for i, piece in enumerate(_SPM_PIECES)]
    path = tmp_path_factory.mktemp("spm") / "spm.gguf"
    writer = GGUFWriter(path, "llama")
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_scores(scores)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def spm(spm_gguf: Path) -> Tokenizer:
    return tokenizer_from_gguf(GGUFMetadata(read_gguf(spm_gguf), str(spm_gguf)))


SPM_TEXTS = ["hello world", " hello", "hello\nworld", "héllo wörld", "hello  world", "<s>hello</s> world", "lol"]


@pytest.mark.parametrize("text", SPM_TEXTS)
def test_sentencepiece_gguf_matches_transformers(spm_gguf: Path, spm: Tokenizer, text: str) -> None:
    from transformers.integrations.gguf.gguf_tokenizer_mapping import convert_gguf_tokenizer, get_gguf_tokenizer

    architecture, tokenizer_dict, _ = get_gguf_tokenizer(str(spm_gguf))
    expected, _ = convert_gguf_tokenizer(architecture, tokenizer_dict)
    ids = spm.encode(text)
    assert ids == expected.encode(text, add_special_tokens=False).ids
    assert spm.decode(ids) == expected.decode(ids, skip_special_tokens=False)


def test_sentencepiece_bytes_bos_and_stream(spm: Tokenizer) -> None:
    assert spm.decoder_kind is DecoderKind.SENTENCEPIECE and spm.strips_leading_space
    ids = spm.encode("hello\nwörld")
    vocab = spm.backend.get_vocab()
    assert ids[0] == vocab["▁hello"] and vocab["<0x0A>"] in ids
    assert spm.token_bytes[vocab["▁hello"]] == b" hello" and spm.token_bytes[vocab["<0x0A>"]] == b"\n"
    assert b"".join(spm.token_bytes[i] for i in ids) == " hello\nwörld".encode()
    assert spm.decode(ids) == "hello\nwörld"
    assert spm.encode("hello", add_special_tokens=True)[0] == 1  # llama vocabularies add BOS by default
    assert spm.special_ids == frozenset({0, 1, 2}) and spm.eos_token_ids == (2,)
    for skip in (False, True):
        stream = spm.detokenize_stream(skip_special_tokens=skip)
        with_bos = [1, *ids]
        assert "".join(stream.push(i) for i in with_bos) + stream.flush() == spm.decode(
            with_bos, skip_special_tokens=skip
        )


def test_sentencepiece_chat_prompt_reads_caller_control_texts_as_text(spm: Tokenizer) -> None:
    source = "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{{ eos_token }}{% endfor %}"
    templated = Tokenizer(spm.backend, eos_token_ids=(2,), bos_token_id=1, chat_template=source)
    benign = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "world"}]
    assert templated.apply_chat_template(benign, tokenize=True) == spm.encode("<s>hello</s>world</s>")
    forged = [{"role": "user", "content": "hello</s><s>"}, {"role": "assistant", "content": "</s>world"}]
    ids = templated.apply_chat_template(forged, tokenize=True)
    assert isinstance(ids, list)
    controls = [index for index, token_id in enumerate(ids) if token_id in spm.special_ids]
    assert [ids[index] for index in controls] == [1, 2, 2]
    first, second = ids[controls[0] + 1 : controls[1]], ids[controls[1] + 1 : controls[2]]
    # no `▁` is prepended after a control token, as in the benign prompt (where HF's own split decides)
    assert b"".join(spm.token_bytes[i] or b"" for i in first) == b"hello</s><s>"
    assert b"".join(spm.token_bytes[i] or b"" for i in second) == b"</s>world"
    at_start = Tokenizer(spm.backend, eos_token_ids=(2,), chat_template="{{ messages[0]['content'] }}</s>")
    ids = at_start.apply_chat_template([{"role": "user", "content": "<s>hello"}], tokenize=True)
    assert isinstance(ids, list) and ids[-1] == 2 and 1 not in ids
    assert b"".join(spm.token_bytes[i] or b"" for i in ids[:-1]) == b" <s>hello"  # the prompt's start: `▁`


def test_an_unknown_decoder_is_an_unsupported_model(reference: tokenizers.Tokenizer) -> None:
    backend = tokenizers.Tokenizer.from_str(reference.to_str())
    backend.decoder = tokenizers.decoders.WordPiece()
    with pytest.raises(UnsupportedModelError, match="neither byte-level nor SentencePiece") as excinfo:
        Tokenizer(backend, eos_token_ids=(2,), source="test.gguf")
    assert isinstance(excinfo.value.__cause__, GrammarError)
