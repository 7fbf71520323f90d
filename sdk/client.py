"""`LLM`: the asynchronous client, Stencil's public face.

    llm = sdk.LLM()                                          # the embedded SmolLM2-135M-Instruct
    person = await llm.generate(text, output=Person)         # a Person
    result = await llm.run(text, output=Person)              # a Result[Person]: value, text, usage, ...
    async for partial in llm.stream(text, output=Person):    # partial Persons, then the final one
        ...

A call goes: arguments checked and resolved (`sdk.options`; typed errors, nothing generated yet) ->
chat messages -> the backend generates under the constraint -> the answer is split from the
reasoning, parsed and validated (`sdk.outputs`), voted on with `samples > 1` (`sdk.voting`), and
retried with the validation error fed back when `retries` allow. Many calls in flight on one `LLM`
are batched together by the engine; cancelling one frees its memory at once.

`aclose` frees the model at once. An `LLM` dropped without it warns (`ResourceWarning`, as asyncio
and httpx do for unclosed clients) and is freed when collected: nothing the backend's threads hold
refers back to the `LLM` or its backend.
"""

from __future__ import annotations

import os
import time
import warnings
import weakref
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import pydantic
from typing_extensions import Unpack

from runtime.engine.outputs import CompletionOutput, RequestOutput, RequestUpdate, Usage
from runtime.engine.sequence import FinishReason
from runtime.errors import CacheBusyError, PromptTooLongError, RequestError
from sdk import reasoning as reasoning_layout
from sdk.backends.base import Backend, BackendRequest
from sdk.backends.local import LocalBackend
from sdk.backends.remote import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, Dialect, RemoteBackend
from sdk.choices import choice_texts, score_choices
from sdk.errors import ConstraintFailedError, GenerationError, IncompleteOutputError, ValidationError
from sdk.options import (
    CALL_OPTIONS,
    STREAM_OPTIONS,
    Call,
    CallOptions,
    SpeculativeOption,
    StreamOptions,
    prepare_call,
    resolve_options,
    speculative_config,
)
from sdk.outputs import OutputKind, output_spec
from sdk.pipelines.mapping import MapResult, check_max_concurrency, map_calls
from sdk.prompts import Message, PromptInput, explain_prompt_too_long
from sdk.results import Result, Timings, add_usage
from sdk.streaming import PartialJSON, Stream, partial_value
from sdk.timing import MaskClock, TimedConstraint
from sdk.tools import ToolCall, ToolCallFormatError, ToolLike
from sdk.tools.agent import run_tool_loop
from sdk.tools.requests import StreamedCalls
from sdk.voting import Votes, tally

__all__ = ["LLM"]

_NO_USAGE = Usage(prompt_tokens=0, completion_tokens=0)


class LLM:
    """A language model that returns typed values.

    Args:
        model: None for the embedded SmolLM2-135M-Instruct, else a `.gguf` file or a Hugging Face
            folder. Loaded now, so a missing file fails here. With `base_url`: the served model's
            name (None: the first the server lists).
        backend: a ready backend instead of `model` (tests, custom engines).
        dtype: activation dtype of a loaded model ("bfloat16", the default, or "float32").
        base_url: an OpenAI-compatible server's API root ("http://host:8000/v1": vLLM, SGLang,
            llama.cpp, `stencil serve`, ...) instead of a local model; see `sdk.backends.remote`.
            The options below apply to it only.
        api_key: the server's key (a bearer token).
        dialect: how constraints are sent: "openai", "vllm", "llama.cpp" or "none" (None: "openai"
            for JSON outputs, "vllm" for regex, choice and grammar outputs). Answers are always
            validated locally too.
        allow_unconstrained: send outputs the dialect cannot express unconstrained (validated
            locally) rather than raise.
        timeout: seconds for connecting and for each read (None: 10 and 600).
        max_retries: retries after connection errors, 429 and 5xx replies (None: 2).
        speculative: fast paths of a local model: None (off), "ngram" (prompt lookup), "auto"
            (prompt lookup and jump-forward over the text the constraint forces) or an
            `sdk.Speculative` (which can add a draft model, or self-speculation). Greedy outputs
            are unchanged token for token and sampling keeps its distribution (see
            `sdk.Speculative`). `Result.usage` counts drafted and accepted tokens.

    Raises:
        runtime.ModelLoadError: the model cannot be loaded.
        RequestError: both `model` and `backend` given, a bad `dtype`, or a remote option without
            `base_url` (`field` names it).
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        backend: Backend | None = None,
        dtype: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        dialect: Dialect | None = None,
        allow_unconstrained: bool = False,
        timeout: float | None = None,
        max_retries: int | None = None,
        speculative: SpeculativeOption = None,
    ) -> None:
        if backend is not None and (model is not None or dtype is not None or base_url is not None):
            raise RequestError("give a model (and dtype), a base_url or a backend, not several", "backend")
        if base_url is not None:
            if dtype is not None:
                raise RequestError("a remote model's dtype is the server's", "dtype")
            if speculative is not None:
                raise RequestError("a remote model's fast paths are the server's", "speculative")
            self.backend: Backend = RemoteBackend(
                base_url,
                model=None if model is None else str(model),
                api_key=api_key,
                dialect=dialect,
                allow_unconstrained=allow_unconstrained,
                timeout=DEFAULT_TIMEOUT if timeout is None else timeout,
                max_retries=DEFAULT_MAX_RETRIES if max_retries is None else max_retries,
            )
        else:
            remote_options = {"api_key": api_key, "dialect": dialect, "timeout": timeout, "max_retries": max_retries}
            given = [name for name, value in remote_options.items() if value is not None]
            if allow_unconstrained:
                given.append("allow_unconstrained")
            if given:
                raise RequestError("only applies to a remote model (base_url=...)", given[0])
            if backend is not None and speculative is not None:
                raise RequestError("a backend given is already loaded: speculate when loading it", "speculative")
            config = speculative_config(speculative)
            self.backend = backend if backend is not None else LocalBackend.load(model, dtype=dtype, speculative=config)
        # Holds nothing of this LLM: the backend, collected with it, stops its own threads.
        self._finalizer = weakref.finalize(self, warn_unclosed, "sdk.LLM", "await llm.aclose()")

    async def generate(
        self,
        prompt: PromptInput,
        *,
        output: Any = None,
        **options: Unpack[CallOptions],
    ) -> Any:
        """Generate a value of the output type. Same arguments as `run`, which also returns how.

        Returns:
            An instance of `output` (a str for free text and grammar outputs, the parsed JSON for a
            JSON Schema dict). Free text cut by `max_tokens` comes back as it is: `run` tells.

        Raises:
            See `run`.
        """
        return (await self.run(prompt, output=output, **options)).value

    async def run(
        self,
        prompt: PromptInput,
        *,
        output: Any = None,
        **options: Unpack[CallOptions],
    ) -> Result[Any]:
        """Generate a value of the output type, with its text, usage, timings, reasoning and votes.

        The keyword arguments after `output` are declared once, with their types and defaults, in
        `sdk.options.CallOptions` (`StreamOptions` for `stream`), which `SyncLLM` shares.

        Args:
            prompt: a user message, a list of chat messages, or an `sdk.Prompt` (instructions,
                context, inputs, rules, few-shot examples).
            output: None or str (free text), a type (Pydantic model, int, Literal, Enum, list[...],
                ...), a JSON Schema dict, or a grammars.Regex / Lark / Choice.
            reasoning: let the model reason in free text first; only the answer is constrained, and
                the reasoning comes back in `Result.reasoning`.
            max_reasoning_tokens: tokens of reasoning after which the answer is forced (None: half
                of `max_tokens`); only with `reasoning=True`.
            samples: self-consistency: draw this many answers in one batch (sharing the prompt's
                KV blocks), parse each and return the most voted one with `Result.votes`.
            vote_on: what samples vote on: None (the whole value), a field name, or a function.
            retries: validation errors fed back to the model for another try (usage is summed):
                for Python-type outputs and tool calls, or any output of a remote model (which
                may break the constraint).
            describe_output: describe the output's form in the system message.
            max_tokens: most tokens to generate (reasoning included).
            temperature: None is greedy (0), or 0.7 with `samples > 1`.
            top_k, top_p, min_p, seed: sampling truncation and a seed for reproducible draws.
            stop: strings that end free text (not allowed with a constrained output).
            repetition_penalty, presence_penalty, frequency_penalty: as in vLLM and OpenAI.
            runaway_guard: steer a constrained value that has fallen into a loop to its end, among
                the tokens the constraint allows (default on; outputs that never loop are unchanged).
            num_beams, length_penalty: beam search (deterministic), under the constraint too.
            tools: tools the model may call: functions (sync or async, typed), Pydantic models,
                OpenAI tool dicts or `sdk.Tool`s; each call's arguments are constrained by its
                tool's schema (`docs/tools.md` has the format).
            tool_choice: "auto" (answer or calls), "required" (calls), "none", or one tool (its
                function, model, name or `sdk.Tool`): exactly one call of it.
            parallel_tool_calls: allow several calls in one completion.

        Returns:
            The `Result`; its `value` is what `generate` returns, its `finish_reason` why the
            completion ended ("length": free text cut by `max_tokens` or the context window).
            When the model called tools, `tool_calls` lists them and `value` is that list.

        Raises:
            RequestError: an unknown keyword, a control out of range or conflicting controls (field
                names it), a bad prompt or message list; PromptTooLongError: the prompt exceeds the
                context window.
            UnsupportedOutputTypeError, grammars.UnsupportedSchemaError, grammars.GrammarError:
                the output cannot be constrained.
            IncompleteOutputError: `max_tokens` (or the context window) ended a constrained output,
                or the reasoning before its answer (partial text and usage attached).
            ValidationError: the output failed validation, after the retries.
            ConstraintFailedError: the constraint could not go on mid-generation.
        """
        return await self._execute(self._prepare(prompt, output, options, CALL_OPTIONS))

    def stream(
        self,
        prompt: PromptInput,
        *,
        output: Any = None,
        **options: Unpack[StreamOptions],
    ) -> Stream[Any]:
        """Stream partial values as the output's fields complete, then the final value.

        Arguments as in `run` (self-consistency and retries do not stream). Free text and grammar
        outputs stream their text so far; JSON outputs a partial object (or list) each time a
        top-level field (or item) completes, each validated for what it has; beam search yields
        only the final value, since no beam is settled before the end.

        Returns:
            A `Stream`: iterate it with `async for`; `stream.result` holds the `Result` afterwards.
            Leaving the loop early (`break`, an exception in its body) stops the generation and
            frees its memory at once.

        Raises:
            The argument errors of `run`, here; generation errors while iterating.
        """
        call = self._prepare(prompt, output, options, STREAM_OPTIONS)
        return Stream(lambda set_result: self._stream_partials(call, set_result))

    async def run_tools(
        self,
        prompt: str | Sequence[Mapping[str, Any]],
        tools: Sequence[ToolLike],
        /,
        *,
        output: Any = None,
        max_turns: int = 5,
        **options: Unpack[CallOptions],
    ) -> Result[Any]:
        """Answer with the help of tools: generate, run the tools the model calls (sync or async
        functions), feed their results back as `role: "tool"` messages, until it answers.

        Args:
            prompt: a user message, or the conversation so far (chat messages).
            tools: functions the model may call (see `run`).
            output: the final answer's type, as in `run`.
            max_turns: most turns with tool calls; after them the model must answer
                (`tool_choice="none"`). `tool_choice` applies to the first turn, "auto" to the others.
            The other keyword arguments are those of `run`, for every turn.

        Returns:
            The final answer's `Result` (usage summed over the turns).

        Raises:
            See `run`; RequestError for a bad `max_turns` or prompt; what a tool's function raises.
        """
        return await run_tool_loop(self.run, prompt, tools, output=output, max_turns=max_turns, options=options)

    def map(
        self,
        prompts: Iterable[PromptInput],
        *,
        output: Any = None,
        ordered: bool = True,
        max_concurrency: int | None = None,
        **options: Unpack[CallOptions],
    ) -> AsyncGenerator[MapResult[Any], None]:
        """Run many prompts at once, batched by the engine; iterate the outcomes with `async for`.

        Args:
            prompts: the prompts (each what `run` takes), drawn as calls finish.
            output: the output type of every call, as in `run`.
            ordered: yield in input order (True) or as calls finish (False).
            max_concurrency: most calls in flight at once; None: all of them.
            The other keyword arguments are those of `run`, for every call.

        Returns:
            An async iterator of `MapResult`s: `index`, `prompt`, and `result` or `error` (a call's
            Stencil error never ends the others). Closing it early cancels the calls still running.

        Raises:
            RequestError: an unknown keyword or a bad `max_concurrency` (here, before any call);
            UnsupportedOutputTypeError, grammars.GrammarError: the output cannot be constrained.
        """
        resolve_options(options)
        output_spec(output)
        check_max_concurrency(max_concurrency)

        async def run_one(prompt: PromptInput) -> Result[Any]:
            return await self.run(prompt, output=output, **options)

        return map_calls(run_one, prompts, ordered=ordered, max_concurrency=max_concurrency)

    async def aclose(self) -> None:
        """Stop the backend (the engine thread); calls still running fail with `ClosedError`."""
        self._finalizer.detach()
        await self.backend.aclose()

    async def __aenter__(self) -> LLM:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # A call's attempts

    def _prepare(self, prompt: PromptInput, output: Any, options: Mapping[str, Any], accepted: frozenset[str]) -> Call:
        """`prepare_call` for this backend: its tool format, and whether it enforces constraints."""
        backend = self.backend
        return prepare_call(
            prompt,
            output,
            options,
            accepted=accepted,
            tool_format=backend.tool_format,
            enforces_constraints=backend.enforces_constraints,
        )

    async def _execute(self, call: Call) -> Result[Any]:
        started = time.perf_counter()
        texts = choice_texts(call) if call.tools is None else None
        if texts is not None:
            scored = await self._scored(call, texts, started)
            if scored is not None:
                return scored
        messages = list(call.messages)
        usage, mask_time, first_token_time = _NO_USAGE, 0.0, None
        num_attempts = 0
        while True:
            num_attempts += 1
            completion = await self._complete(call, messages)
            usage = add_usage(usage, completion.output.usage)
            mask_time += completion.mask_time
            if first_token_time is None:
                first_token_time = completion.time_to_first_token
            try:
                answer = _answer(call, completion.output, usage)
            except ValidationError as exc:
                if num_attempts > call.retries:
                    raise
                messages = [*messages, *_feedback(exc)]
                continue
            timings = Timings(
                time_to_first_token=first_token_time,
                total=time.perf_counter() - started,
                mask_time=mask_time,
            )
            return Result(
                value=answer.value,
                text=answer.text,
                usage=usage,
                timings=timings,
                finish_reason=answer.finish_reason,
                reasoning=answer.reasoning,
                votes=answer.votes,
                num_attempts=num_attempts,
                tool_calls=answer.tool_calls,
            )

    async def _scored(self, call: Call, texts: tuple[str, ...], started: float) -> Result[Any] | None:
        """The result of a closed-set output ranked by likelihood (`sdk.choices`); None when the
        backend cannot score."""
        try:
            choice = await score_choices(self.backend, call, texts)
        except CacheBusyError:
            return None  # the pool is full of running requests: generate, which queues for it
        except PromptTooLongError as exc:
            explained = explain_prompt_too_long(exc, call.messages, call.spec)
            if explained is None:
                raise
            raise explained from exc
        if choice is None:
            return None
        return Result(
            value=call.spec.parse(choice.text),
            text=choice.text,
            usage=choice.usage,
            timings=Timings(time_to_first_token=None, total=time.perf_counter() - started, mask_time=0.0),
            finish_reason=FinishReason.STOP,
            choice_logprobs=choice.logprobs,
        )

    async def _complete(self, call: Call, messages: list[Message]) -> _Completion:
        request, clock = self._request(call, messages)
        submitted = time.perf_counter()
        first_token_time = None
        output = None
        async with aclosing(self._updates(call, request)) as updates:
            async for update in updates:
                if first_token_time is None and any(delta.token_ids or delta.text for delta in update.deltas):
                    first_token_time = time.perf_counter() - submitted
                output = update.output
        if output is None:
            raise GenerationError("the backend ended without a result", text="", usage=_NO_USAGE)
        if first_token_time is None and output.usage.completion_tokens:
            first_token_time = time.perf_counter() - submitted  # beam search reports only at the end
        return _Completion(output, first_token_time, clock.seconds)

    async def _updates(self, call: Call, request: BackendRequest) -> AsyncGenerator[RequestUpdate, None]:
        """The backend's updates; a prompt too long for the context window says what the output's description took."""
        try:
            async with aclosing(self.backend.stream(request)) as updates:
                async for update in updates:
                    yield update
        except PromptTooLongError as exc:
            explained = explain_prompt_too_long(exc, request.messages, call.spec)
            if explained is None:
                raise
            raise explained from exc

    def _request(self, call: Call, messages: list[Message]) -> tuple[BackendRequest, MaskClock]:
        """The backend request of an attempt, its constraint timed on the returned clock."""
        clock = MaskClock()
        constraint = None if call.constraint is None else TimedConstraint(call.constraint, clock)
        request = BackendRequest(
            messages=messages,
            params=call.params,
            constraint=constraint,
            template_variables=call.template_variables,
            output=call.spec,
            reasoning=call.reasoning,
            tools=call.tools,
        )
        return request, clock

    async def _stream_partials(
        self, call: Call, set_result: Callable[[Result[Any]], None]
    ) -> AsyncGenerator[Any, None]:
        started = time.perf_counter()
        request, clock = self._request(call, call.messages)
        is_json = call.spec.kind in (OutputKind.TYPE, OutputKind.JSON_SCHEMA)
        scanner = PartialJSON()
        streamed_calls = None if call.tools is None else StreamedCalls(call.tools)
        is_broken = False  # the streamed text left the tool-call format: nothing more to show
        text, answer_start, first_token_time, output = "", None if call.reasoning else 0, None, None
        async with aclosing(self._updates(call, request)) as updates:
            async for update in updates:
                output = update.output
                delta = update.text
                if not delta:
                    continue
                if first_token_time is None:
                    first_token_time = time.perf_counter() - started
                text += delta
                if answer_start is None:
                    answer_start = _answer_start(text, len(delta))
                    if answer_start is None:
                        continue
                    delta = text[answer_start:]
                if streamed_calls is not None:
                    try:
                        delta, calls_so_far = streamed_calls.feed(delta)
                    except ToolCallFormatError:
                        # Only a backend that does not enforce the format gets here; the final
                        # result reports the broken call as a ValidationError.
                        streamed_calls, is_broken = None, True
                        continue
                    if calls_so_far is not None:
                        yield calls_so_far
                    if not delta:
                        continue
                if is_broken:
                    continue
                if not is_json:
                    # The separator after the reasoning marker may come in a later token than the marker.
                    answer_text = (
                        text[answer_start:].removeprefix(reasoning_layout.SEPARATOR) if call.reasoning else text
                    )
                    if answer_text:
                        yield answer_text
                elif scanner.feed(delta) and not scanner.is_closed:
                    partial = partial_value(call.spec, scanner.complete_prefix())
                    if partial is not None:
                        yield partial
        if output is None:
            raise GenerationError("the backend ended without a result", text=text, usage=_NO_USAGE)
        answer = _answer(call, output, output.usage)
        timings = Timings(
            time_to_first_token=first_token_time if first_token_time is not None else time.perf_counter() - started,
            total=time.perf_counter() - started,
            mask_time=clock.seconds,
        )
        set_result(
            Result(
                answer.value,
                answer.text,
                output.usage,
                timings,
                answer.finish_reason,
                answer.reasoning,
                tool_calls=answer.tool_calls,
            )
        )
        yield answer.value


def warn_unclosed(client: str, close_call: str) -> None:
    """Warn, once a client is collected, that it was never closed (a `weakref.finalize` callback)."""
    warnings.warn(
        f"unclosed {client}: its model was held until garbage collection; "
        f"call `{close_call}` or use it as a context manager",
        ResourceWarning,
        stacklevel=2,
    )


@dataclass(frozen=True)
class _Completion:
    """What one backend request gave back, with its times."""

    output: RequestOutput
    time_to_first_token: float | None
    mask_time: float


@dataclass(frozen=True)
class _Answer:
    """The value of an attempt and where it came from."""

    value: Any
    text: str
    reasoning: str | None
    finish_reason: FinishReason
    votes: Votes[Any] | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)


def _answer(call: Call, output: RequestOutput, usage: Usage) -> _Answer:
    """The value of a finished request: the one completion's, or the vote of the samples.

    Raises:
        GenerationError: no completion gave a value (with samples: the first sample's error).
    """
    if call.num_samples == 1:
        return _parse_completion(call, output.outputs[0], usage)
    answers: list[tuple[int, _Answer]] = []
    failures: list[GenerationError] = []
    for completion in output.outputs:
        try:
            answers.append((completion.index, _parse_completion(call, completion, usage)))
        except GenerationError as exc:
            failures.append(exc)
    if not answers:
        raise failures[0]
    votes = tally([(index, answer.value) for index, answer in answers], call.num_samples, call.vote_on)
    winner = dict(answers)[votes.winner.sample_index]
    return _Answer(winner.value, winner.text, winner.reasoning, winner.finish_reason, votes)


def _parse_completion(call: Call, completion: CompletionOutput, usage: Usage) -> _Answer:
    """The value of one completion, or the typed error that says why there is none.

    Free text cut by `max_tokens` is still a value (its `finish_reason` says it was cut); an output
    with a form (a type, a schema, a grammar) cut short is not one, nor a reasoning with no answer.
    """
    text = completion.text
    reasoning, answer_text = reasoning_layout.split(text) if call.reasoning else (None, text)
    is_cut = completion.finish_reason is FinishReason.LENGTH
    if call.tools is not None and answer_text is not None and completion.finish_reason is not FinishReason.ERROR:
        tool_calls = call.tools.read(answer_text, usage=usage, is_cut=is_cut)
        if tool_calls is not None:
            return _Answer(tool_calls, text, reasoning, completion.finish_reason, tool_calls=tool_calls)
    if is_cut and (call.spec.kind is not OutputKind.TEXT or answer_text is None):
        raise IncompleteOutputError(
            f"the output reached max_tokens={call.params.max_tokens} (or the context window) before it was complete",
            text=text,
            usage=usage,
            reasoning=reasoning,
        )
    if completion.finish_reason is FinishReason.ERROR:
        if isinstance(completion.error, ValidationError):  # a backend's local check (remote servers)
            raise ValidationError(
                completion.error.details, text=text, usage=usage, reasoning=reasoning
            ) from completion.error
        raise ConstraintFailedError(
            f"the constraint could not go on: {completion.error}", text=text, usage=usage, reasoning=reasoning
        ) from completion.error
    if answer_text is None:
        details = [{"type": "answer_missing", "loc": (), "msg": "no answer after the reasoning", "input": text}]
        raise ValidationError(details, text=text, usage=usage, reasoning=reasoning)
    try:
        value = call.spec.parse(answer_text)
    except pydantic.ValidationError as exc:
        details = [dict[str, Any](error) for error in exc.errors(include_url=False)]
        raise ValidationError(details, text=text, usage=usage, reasoning=reasoning) from exc
    return _Answer(value, text, reasoning, completion.finish_reason)


def _answer_start(text: str, num_new_chars: int) -> int | None:
    """Where the answer starts once the reasoning marker has arrived (None: not yet)."""
    marker = reasoning_layout.MARKER
    found = text.find(marker, max(0, len(text) - num_new_chars - len(marker)))
    if found < 0:
        return None
    start = found + len(marker)
    return start + len(reasoning_layout.SEPARATOR) if text.startswith(reasoning_layout.SEPARATOR, start) else start


def _feedback(exc: ValidationError) -> list[Message]:
    """The turns that show the model its invalid answer and what was wrong with it."""
    problems = "\n".join(
        f"- {'.'.join(str(part) for part in detail.get('loc', ())) or 'answer'}: {detail.get('msg', '')}"
        for detail in exc.details
    )
    return [
        {"role": "assistant", "content": exc.text},
        {"role": "user", "content": f"That answer is not valid:\n{problems}\nWrite the corrected answer."},
    ]
