"""Shared fixtures: the embedded model's real tokenizer vocabulary."""

from pathlib import Path

import pytest

from grammars import Vocabulary

REFERENCE_TOKENIZER = Path(__file__).resolve().parents[3] / "shared" / "bench" / "smollm2-135m-instruct.tokenizer.json"


@pytest.fixture(scope="session")
def hf_tokenizer():
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(REFERENCE_TOKENIZER))


@pytest.fixture(scope="session")
def vocab() -> Vocabulary:
    return Vocabulary.from_tokenizer(str(REFERENCE_TOKENIZER))
