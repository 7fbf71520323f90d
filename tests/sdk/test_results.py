"""Result and Timings: summed usage and the mask share."""

from __future__ import annotations

from runtime.engine.outputs import Usage
from sdk.results import Timings, add_usage


def test_usage_adds_up_over_attempts() -> None:
    total = add_usage(Usage(prompt_tokens=30, completion_tokens=5), Usage(prompt_tokens=50, completion_tokens=7))
    assert (total.prompt_tokens, total.completion_tokens, total.total_tokens) == (80, 12, 92)


def test_mask_share_is_unknown_without_a_total_time() -> None:
    assert Timings(time_to_first_token=0.1, total=2.0, mask_time=0.5).mask_share == 0.25
    assert Timings(time_to_first_token=None, total=0.0, mask_time=0.0).mask_share is None
