"""Token bytes and end-of-sequence ids of the SmolLM2 vocabulary, built as the engine builds it (from the
runtime's tokenizer) and checked against Hugging Face's decoding of the reference tokenizer.json."""

import pytest

from grammars import GrammarError, Vocabulary
from tests.shared_data import reference_tokenizer


def test_token_bytes_reproduce_the_tokenizers_decoding(vocab, hf_tokenizer):
    text = 'Grüße, 世界! {"k": [1, 2.5e-3]}\n\t  def f(x):\n        return x 🙂'
    ids = hf_tokenizer.encode(text, add_special_tokens=False).ids
    assert b"".join(vocab.token_bytes[i] for i in ids) == text.encode("utf-8")


def test_special_tokens_have_no_bytes_and_eos_is_found(vocab, hf_tokenizer):
    im_end, endoftext = hf_tokenizer.token_to_id("<|im_end|>"), hf_tokenizer.token_to_id("<|endoftext|>")
    assert vocab.token_bytes[im_end] is None and vocab.token_bytes[endoftext] is None
    assert set(vocab.eos_token_ids) == {im_end, endoftext}
    assert vocab.size == 49152


def test_mask_width_can_exceed_the_tokenizer():
    vocab = Vocabulary([b"a", b"b", None], [2], size=8)
    assert vocab.size == 8
    with pytest.raises(GrammarError):
        Vocabulary([b"a", None], [1], size=1)
    with pytest.raises(GrammarError, match="end-of-sequence"):
        Vocabulary([b"a"], [])


def test_fingerprint_identifies_the_vocabulary():
    a = Vocabulary([b"a", b"b", None], [2])
    assert a.fingerprint == Vocabulary([b"a", b"b", None], [2]).fingerprint
    assert a.fingerprint != Vocabulary([b"a", b"c", None], [2]).fingerprint
    assert a.fingerprint != Vocabulary([b"a", b"b", None], [2], size=4).fingerprint


def test_runtime_style_tokenizer_objects_are_accepted():
    class Tok:
        token_bytes = [b"x", b"y", None]
        eos_token_ids = (2,)
        vocab_size = 3

    vocab = Vocabulary.from_tokenizer(Tok(), size=4)
    assert vocab.token_bytes == (b"x", b"y", None) and vocab.size == 4


def test_a_tokenizer_json_and_the_runtime_tokenizer_give_one_vocabulary(vocab, hf_tokenizer):
    from_json = Vocabulary.from_tokenizer(str(reference_tokenizer()))
    from_backend = Vocabulary.from_tokenizer(hf_tokenizer)
    assert from_json == vocab == from_backend
    assert from_json.token_bytes == vocab.token_bytes and from_json.eos_token_ids == vocab.eos_token_ids


def test_sentencepiece_byte_fallback_tokens_are_raw_bytes():
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    pieces = {"<unk>": 0, "</s>": 1, "<0x0A>": 2, "<0xC3>": 3, "▁hi": 4, "▁": 5, "h": 6, "i": 7}
    backend = Tokenizer(models.BPE(pieces, [], unk_token="<unk>", byte_fallback=True))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    backend.add_special_tokens([AddedToken("<unk>", special=True), AddedToken("</s>", special=True)])
    vocab = Vocabulary.from_tokenizer(backend)
    assert vocab.token_bytes == (None, None, b"\n", b"\xc3", b" hi", b" ", b"h", b"i")
    assert vocab.eos_token_ids == (1,)


def test_an_unknown_decoder_is_a_grammar_error(hf_tokenizer):
    from tokenizers import Tokenizer, decoders

    backend = Tokenizer.from_str(hf_tokenizer.to_str())
    backend.decoder = decoders.WordPiece()
    with pytest.raises(GrammarError, match="neither byte-level nor SentencePiece"):
        Vocabulary.from_tokenizer(backend)
