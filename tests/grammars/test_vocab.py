"""Token bytes and end-of-sequence ids of the SmolLM2 vocabulary."""

import pytest

from grammars import GrammarError, Vocabulary


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
