"""A backend that replays scripted completions: for testing code that calls an `LLM`, without a model.

    llm = sdk.LLM(backend=ScriptedBackend(['{"name": "Ada", "age": 36}']))
    person = await llm.generate("...", output=Person)   # parsed and validated as usual

Each request takes the next script entry (a completion text, or one text per sample when the request
asks for `n` samples); the texts are streamed a few characters per update, so streaming code sees
partial values. The constraint is not enforced (nor timed: `mask_time` is 0.0): the script is what
the "model" writes, which is what lets tests exercise validation errors, retries and cut-off outputs.

Given `scores` (answer text -> log-probability), the backend also scores, as the local engine does,
so calls whose output is a closed set of labels are ranked by those numbers instead of generated.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass

from runtime.engine.outputs import CompletionDelta, CompletionOutput, RequestOutput, RequestUpdate, Usage
from runtime.engine.sequence import FinishReason
from sdk.backends.base import Backend, BackendRequest, Scores
from sdk.errors import ClosedError, SDKError

__all__ = ["Scripted", "ScriptedBackend"]

#: Characters per streamed update (a stand-in for a token).
CHARS_PER_UPDATE = 4


@dataclass(frozen=True)
class Scripted:
    """One scripted completion.

    Attributes:
        text: what the "model" writes.
        finish_reason: how it ends ("length" plays a completion cut by max_tokens).
    """

    text: str
    finish_reason: FinishReason = FinishReason.STOP


#: A script entry: a text, a `Scripted`, or one of either per sample.
Entry = str | Scripted | Sequence[str | Scripted]


class ScriptedBackend(Backend):
    """Replays `script` entries, one per request, in order; `requests` records what was asked.

    Args:
        script: the entries, or a function of the request that returns one.
        scores: the log-probability of each answer text `score` may be asked about; None: this
            backend cannot score (calls generate from the script). `scored` records the texts asked.

    Raises (from `stream`, `score`):
        SDKError: the script ran out (a test made more calls than it scripted), or a text to score
            has no scripted score.
    """

    def __init__(
        self,
        script: Sequence[Entry] | Callable[[BackendRequest], Entry],
        *,
        scores: Mapping[str, float] | None = None,
    ) -> None:
        self._script = script
        self._scores = scores
        self.requests: list[BackendRequest] = []
        self.scored: list[tuple[str, ...]] = []
        self.is_closed = False

    async def stream(self, request: BackendRequest) -> AsyncGenerator[RequestUpdate, None]:
        """See `Backend.stream`."""
        if self.is_closed:
            raise ClosedError("the LLM is closed")
        if callable(self._script):
            entry = self._script(request)
        elif len(self.requests) < len(self._script):
            entry = self._script[len(self.requests)]
        else:
            raise SDKError(f"the script has {len(self._script)} entries; request {len(self.requests) + 1} has none")
        self.requests.append(request)
        completions = [_scripted(item) for item in ([entry] if isinstance(entry, (str, Scripted)) else entry)]
        request_id = f"scripted-{len(self.requests)}"
        longest = max(len(c.text) for c in completions)
        for start in range(0, longest, CHARS_PER_UPDATE):
            deltas = tuple(
                CompletionDelta(index=index, token_ids=(0,), text=c.text[start : start + CHARS_PER_UPDATE])
                for index, c in enumerate(completions)
                if start < len(c.text)
            )
            yield RequestUpdate(request_id=request_id, deltas=deltas)
        outputs = tuple(
            CompletionOutput(
                index=index,
                token_ids=tuple(range(-(-len(c.text) // CHARS_PER_UPDATE))),
                text=c.text,
                finish_reason=c.finish_reason,
            )
            for index, c in enumerate(completions)
        )
        usage = Usage(
            prompt_tokens=sum(len(m.get("content") or "") for m in request.messages) // CHARS_PER_UPDATE,
            completion_tokens=sum(len(o.token_ids) for o in outputs),
        )
        yield RequestUpdate(request_id=request_id, deltas=(), output=RequestOutput(request_id, (), outputs, usage))

    async def score(self, messages: Sequence[Mapping[str, str]], texts: Sequence[str]) -> Scores | None:
        """See `Backend.score`: the scripted numbers (usage counts characters / 4, like `stream`)."""
        if self.is_closed:
            raise ClosedError("the LLM is closed")
        if self._scores is None:
            return None
        missing = [text for text in texts if text not in self._scores]
        if missing:
            raise SDKError(f"no scripted score for {missing}")
        self.scored.append(tuple(texts))
        usage = Usage(
            prompt_tokens=sum(len(m.get("content") or "") for m in messages) // CHARS_PER_UPDATE,
            completion_tokens=sum(len(text) for text in texts) // CHARS_PER_UPDATE,
        )
        return Scores(logprobs=tuple(self._scores[text] for text in texts), usage=usage)

    async def aclose(self) -> None:
        """Mark the backend closed: later calls raise `ClosedError`."""
        self.is_closed = True


def _scripted(item: str | Scripted) -> Scripted:
    return item if isinstance(item, Scripted) else Scripted(item)
