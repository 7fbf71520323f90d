"""Token logprobs in OpenAI's two shapes: chat (`{"content": [...]}`) and text completions.

The engine takes logprobs after the grammar mask, so a masked token has logprob -inf. Such tokens are
left out of `top_logprobs` (a constrained request never shows a token it could not have produced),
which also keeps the JSON valid: -inf has no JSON spelling.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from runtime.engine.sequence import TokenLogprob
from runtime.tokenizer import Tokenizer

__all__ = ["chat_logprobs", "completion_logprobs"]


def chat_logprobs(tokenizer: Tokenizer, logprobs: Sequence[TokenLogprob]) -> dict[str, Any]:
    """OpenAI's chat `logprobs` object of some generated tokens."""
    content = []
    for item in logprobs:
        entry = _token(tokenizer, item.token_id, item.logprob)
        entry["top_logprobs"] = [_token(tokenizer, token_id, logprob) for token_id, logprob in _allowed(item)]
        content.append(entry)
    return {"content": content, "refusal": None}


def completion_logprobs(tokenizer: Tokenizer, logprobs: Sequence[TokenLogprob], text_offset: int) -> dict[str, Any]:
    """OpenAI's text-completion `logprobs` object of some tokens, whose text starts at `text_offset`."""
    tokens, offsets = [], []
    for item in logprobs:
        offsets.append(text_offset)
        text = _text(tokenizer, item.token_id)
        tokens.append(text)
        text_offset += len(text)
    return {
        "tokens": tokens,
        "token_logprobs": [item.logprob for item in logprobs],
        "top_logprobs": [
            {_text(tokenizer, token_id): logprob for token_id, logprob in _allowed(item)} for item in logprobs
        ],
        "text_offset": offsets,
    }


def _allowed(item: TokenLogprob) -> list[tuple[int, float]]:
    """The alternatives the mask allowed (masked tokens have logprob -inf)."""
    return [(token_id, logprob) for token_id, logprob in item.top_logprobs if math.isfinite(logprob)]


def _token(tokenizer: Tokenizer, token_id: int, logprob: float) -> dict[str, Any]:
    raw = tokenizer.decoded_bytes[token_id]
    return {"token": raw.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(raw)}


def _text(tokenizer: Tokenizer, token_id: int) -> str:
    return tokenizer.decoded_bytes[token_id].decode("utf-8", errors="replace")
