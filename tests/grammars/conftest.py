"""Shared fixtures: the embedded model's real tokenizer vocabulary, built the way the engine builds it."""

import pytest
from _pytest.mark.expression import Expression

from grammars import Vocabulary
from tests.grammars.fuzz_strategies import register_fuzz_profile
from tests.shared_data import reference_tokenizer


def pytest_configure(config: pytest.Config) -> None:
    """The fuzz tests run long only when `-m` selects fuzz tests and not unmarked ones (`-m fuzz`,
    `-m "fuzz and not slow"`); a default run, or `-m "not slow"`, keeps them short."""
    markexpr = config.getoption("markexpr") or ""
    is_long = False
    if markexpr:
        expression = Expression.compile(markexpr)
        is_long = expression.evaluate(_marked_fuzz) and not expression.evaluate(_unmarked)
    register_fuzz_profile(is_long=is_long)


def _marked_fuzz(name: str, /, **kwargs: str | int | bool | None) -> bool:
    """A `-m` matcher for a test marked fuzz only."""
    return name == "fuzz"


def _unmarked(name: str, /, **kwargs: str | int | bool | None) -> bool:
    """A `-m` matcher for a test with no marker."""
    return False


@pytest.fixture(scope="session")
def hf_tokenizer():
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(reference_tokenizer()))


@pytest.fixture(scope="session")
def runtime_tokenizer():
    """The runtime's tokenizer of the embedded model, read from its GGUF (no weights loaded)."""
    from runtime.loading import default_model_path
    from runtime.loading.gguf_file import read_gguf
    from runtime.loading.gguf_metadata import GGUFMetadata
    from runtime.loading.gguf_tokenizer import tokenizer_from_gguf

    path = default_model_path()
    return tokenizer_from_gguf(GGUFMetadata(read_gguf(path), str(path)))


@pytest.fixture(scope="session")
def vocab(runtime_tokenizer) -> Vocabulary:
    """The vocabulary the engine masks with: `LLMEngine` builds it from its tokenizer the same way."""
    return Vocabulary.from_tokenizer(runtime_tokenizer)
