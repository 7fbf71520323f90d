"""A prompt far past the context window is refused from its length in bytes, before it is tokenized;
the bound never refuses a prompt that would fit, and tokenizers it does not hold for have none."""

from __future__ import annotations

import pytest
import tokenizers
from tokenizers import AddedToken, decoders, models, normalizers, pre_tokenizers

from runtime.errors import PromptTooLongError
from runtime.tokenizer import Tokenizer
from tests.runtime.fakes import smollm2_tokenizer
from tests.runtime.test_engine import GREEDY, make_engine
from tests.runtime.test_tokenizer import TEXTS

HUGE_PROMPT = "x" * 10_000_000


def test_a_huge_prompt_is_refused_before_tokenizing_with_the_usual_error() -> None:
    engine = make_engine()
    with pytest.raises(PromptTooLongError) as too_long:
        engine.add_request(HUGE_PROMPT)
    assert too_long.value.field == "prompt" and too_long.value.max_context_tokens == engine.max_model_len
    # The count is the bound from the rendered prompt's bytes: nothing was tokenized.
    rendered = engine.tokenizer.apply_chat_template([{"role": "user", "content": HUGE_PROMPT}])
    assert isinstance(rendered, str) and engine.tokenizer.max_bytes_per_token is not None
    expected = -(-len(rendered.encode()) // engine.tokenizer.max_bytes_per_token)
    assert too_long.value.num_prompt_tokens == expected >= engine.max_model_len
    assert too_long.value.is_lower_bound and f"at least {expected} tokens" in str(too_long.value)
    with pytest.raises(PromptTooLongError) as in_batch:
        engine.generate(["hi", HUGE_PROMPT], GREEDY)
    assert in_batch.value.field == "prompts[1]"
    assert not engine.has_unfinished_requests()


def test_the_chat_template_refuses_it_only_when_asked_for_a_window() -> None:
    tokenizer = smollm2_tokenizer()
    messages = [{"role": "user", "content": "word " * 2000}]
    assert len(tokenizer.apply_chat_template(messages, tokenize=True, context_window=None)) > 2000
    with pytest.raises(PromptTooLongError) as too_long:
        tokenizer.apply_chat_template([{"role": "user", "content": HUGE_PROMPT}], tokenize=True, context_window=8192)
    assert too_long.value.field == "prompt" and too_long.value.max_context_tokens == 8192


def test_the_bound_is_the_longest_token_and_holds_on_real_text() -> None:
    tokenizer = smollm2_tokenizer()
    longest = max(tokenizer.decoded_bytes, key=len)
    assert tokenizer.max_bytes_per_token == len(longest)
    # A text made of the longest token is the densest there is: still at least the bound's count.
    for text in [*TEXTS, longest.decode("utf-8", errors="replace") * 50, " " * 5000, "😀" * 300]:
        rendered = tokenizer.apply_chat_template([{"role": "user", "content": text}])
        assert isinstance(rendered, str)
        num_tokens = len(tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=True))
        assert num_tokens * tokenizer.max_bytes_per_token >= len(rendered.encode())


def test_a_prompt_that_fits_is_not_refused_by_the_bound() -> None:
    tokenizer = smollm2_tokenizer()
    messages = [{"role": "user", "content": "word " * 100}]
    num_tokens = len(tokenizer.apply_chat_template(messages, tokenize=True))
    ids = tokenizer.apply_chat_template(messages, tokenize=True, context_window=num_tokens + 1)
    assert len(ids) == num_tokens


def _tokenizer(backend: tokenizers.Tokenizer) -> Tokenizer:
    backend.decoder = decoders.ByteLevel()
    return Tokenizer(backend, eos_token_ids=[0])


def _bpe(**options: object) -> tokenizers.Tokenizer:
    vocab = {"<unk>": 0, "a": 1, "b": 2, "ab": 3, " ": 4}
    return tokenizers.Tokenizer(models.BPE(vocab, [("a", "b")], unk_token="<unk>", **options))


def _with(backend: tokenizers.Tokenizer, **steps: object) -> tokenizers.Tokenizer:
    for name, step in steps.items():
        setattr(backend, name, step)
    return backend


def _with_stripping_token(backend: tokenizers.Tokenizer) -> tokenizers.Tokenizer:
    backend.add_special_tokens([AddedToken("<mask>", lstrip=True)])
    return backend


@pytest.mark.parametrize(
    ("backend", "has_bound"),
    [
        (_bpe(), True),
        (_with(_bpe(), pre_tokenizer=pre_tokenizers.ByteLevel(add_prefix_space=False)), True),
        (
            _with(_bpe(), normalizer=normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])),
            True,
        ),
        (_bpe(fuse_unk=True, byte_fallback=True), True),
        (_bpe(fuse_unk=True), False),  # a run of unknown characters is one token
        (_with(_bpe(), normalizer=normalizers.NFC()), False),  # composing shrinks text
        (_with(_bpe(), normalizer=normalizers.Replace("ab", "")), False),
        (_with(_bpe(), pre_tokenizer=pre_tokenizers.WhitespaceSplit()), False),  # drops whitespace
        (_with(_bpe(), pre_tokenizer=pre_tokenizers.Split(" ", behavior="removed")), False),
        (_with_stripping_token(_bpe()), False),  # swallows the whitespace before it
        (tokenizers.Tokenizer(models.WordLevel({"<unk>": 0, "a": 1}, unk_token="<unk>")), False),
    ],
)
def test_tokenizers_that_can_drop_text_have_no_bound(backend: tokenizers.Tokenizer, has_bound: bool) -> None:
    tokenizer = _tokenizer(backend)
    assert (tokenizer.max_bytes_per_token is not None) is has_bound
    if not has_bound:  # then nothing is refused before encoding (the exact count is the engine's)
        messages = [{"role": "user", "content": "ab " * 100}]
        assert tokenizer.apply_chat_template(messages, tokenize=True, context_window=2)
