"""Paths into `../shared` (external corpora and reference files beside the checkout).

Tests read nothing outside the checkout but this folder; where it is missing they skip with the reason.
"""

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"


def shared_path(*parts: str) -> Path:
    """`../shared/<parts>`; skips the calling test when it is not on this machine."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is not on this machine (external data beside the checkout)")
    return path


def reference_tokenizer() -> Path:
    """The embedded model's tokenizer as Hugging Face `tokenizers` writes it (a reference)."""
    return shared_path("bench", "smollm2-135m-instruct.tokenizer.json")
