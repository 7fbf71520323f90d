"""`LLM(speculative=...)`: each accepted value becomes the runtime's `SpeculativeConfig`, bad ones a typed error."""

from __future__ import annotations

import pytest

import sdk
from runtime.engine.speculative import SpeculativeConfig
from runtime.errors import RequestError
from sdk.options import speculative_config


def test_names_and_speculative_objects_become_runtime_configs() -> None:
    assert speculative_config(None) is None
    assert speculative_config("auto") == SpeculativeConfig()
    assert speculative_config("ngram") == SpeculativeConfig(jump_forward=False)
    config = speculative_config(sdk.Speculative(num_draft_tokens=4, draft_model="draft.gguf", prompt_lookup=False))
    assert config == SpeculativeConfig(num_draft_tokens=4, draft_model="draft.gguf", prompt_lookup=False)
    assert config.has_draft_model
    config = speculative_config(sdk.Speculative(self_draft_layers=8, jump_forward=False, prompt_lookup=False))
    assert config.self_draft_layers == 8 and config.has_draft_model


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ("eagle", "speculative"),
        (3, "speculative"),
        (sdk.Speculative(num_draft_tokens=0), "num_draft_tokens"),
        (sdk.Speculative(self_draft_layers=0), "self_draft_layers"),
        (sdk.Speculative(self_draft_layers=4, draft_model="draft.gguf"), "self_draft_layers"),
        (sdk.Speculative(jump_forward=False, prompt_lookup=False), "speculative"),
    ],
)
def test_bad_values_raise_request_errors_naming_the_field(value: object, field: str) -> None:
    with pytest.raises(RequestError) as info:
        speculative_config(value)  # type: ignore[arg-type]
    assert info.value.field == field
