"""Soak: many mixed requests through one `sdk.LLM`, good and bad, concurrently; nothing leaks or hangs.

The mix (a fixed, seeded shuffle) holds constrained calls (Choice, Regex, Lark, Literal, a Pydantic
model, a JSON Schema dict, a streamed Choice), free text, calls cancelled mid-generation, and bad ones:
a constraint whose matcher raises, a regex whose first mask runs past the engine's mask budget
(`max_mask_seconds`), and specifications or options refused before generation. What counts as right:

- a constrained call returns a value of its output type whose text the constraint accepts; its
  language is finite and shorter than `max_tokens`, so the constraint always ends it (an
  IncompleteOutputError is a failure);
- free text returns a str, ended by the model or cut with exactly `max_tokens` tokens (`finish_reason`);
- a cancelled call raises CancelledError (or finished before the cancel landed);
- a bad call raises, or ends with, the one typed error its kind calls for (an `sdk.StencilError`).

Afterwards the KV block pool must be whole, and the resident memory (RSS) gained from the end of the
warm-up requests (200 at full scale) to the end must stay under MAX_RSS_GROWTH.

    python benchmarks/soak.py                   # 1,000 requests on the embedded SmolLM2
    python benchmarks/soak.py --smoke           # 60 requests
    python benchmarks/soak.py --requests 300

Needs the package importable (scripts/install.sh installs it editable; or PYTHONPATH=.).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import random
import re
import resource
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, Field

import grammars
import sdk
from runtime.engine.sampling_params import SamplingParams
from sdk.backends import BackendRequest, LocalBackend

PROMPTS = ["Pick one.", "Answer briefly.", "What is the colour of the sky?", "Give me a number.", "Say something."]
#: The engine's mask budget in the soak: the slow regex must run past it, every other mask fit it.
#: (At 0.2 s the cold first mask of a three-option Choice overran it on a busy two-core machine.)
MAX_MASK_SECONDS = 1.0
#: Ten stacked lookaheads: the first mask takes far longer than the budget, also after 40 tries that
#: each leave a budget's worth of lexer rows cached (the SDK compiles the regex once).
SLOW_REGEX = "".join(f"(?=.*{letter})" for letter in "abcdefghij") + ".{0,40}"
#: Resident memory the requests after the warm-up may add.
MAX_RSS_GROWTH = 50 * 2**20
COLOURS = grammars.Choice(["red", "green", "blue"])
DIGITS = grammars.Regex(r"[0-9]{1,3}")
PAIR = grammars.Lark('start: "(" D ("," D)~0..2 ")"\nD: /[0-9]/')
FLAG_SCHEMA = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}},
    "required": ["ok"],
    "additionalProperties": False,
}


class Point(BaseModel):
    x: int = Field(ge=0, le=99)
    y: int = Field(ge=0, le=99)
    label: Literal["a", "b"]


class Outcome:
    """How a request ended, as counted in the report."""

    VALUE = "value"
    INCOMPLETE = "incomplete at max_tokens"
    CANCELLED = "cancelled"
    TYPED_ERROR = "typed error"


class SoakFailure(Exception):
    """A request ended in a way its kind does not allow."""


@dataclass
class SoakReport:
    """What a soak run counted and measured."""

    num_requests: int
    kinds: collections.Counter[str] = field(default_factory=collections.Counter)
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    failures: list[str] = field(default_factory=list)
    rss_after_warmup: int = 0
    rss_end: int = 0
    seconds: float = 0.0

    @property
    def rss_growth(self) -> int:
        """Bytes of resident memory gained after the warm-up requests."""
        return self.rss_end - self.rss_after_warmup


def rss_bytes() -> int:
    """Current resident memory of this process (Linux), else its peak."""
    statm = Path("/proc/self/statm")
    if statm.exists():
        return int(statm.read_text().split()[1]) * resource.getpagesize()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


class _RaisingMatcher:
    """A user's constraint with a bug: its mask raises a bare Python exception."""

    error = None

    def mask(self, max_seconds: float | None = None, max_remaining_tokens: int | None = None) -> torch.Tensor:
        raise KeyError("a bug in a user's constraint")

    def advance(self, token_id: int) -> None:
        pass

    def is_accepting(self) -> bool:
        return False

    def fork(self) -> _RaisingMatcher:
        return self


class _RaisingConstraint:
    def matcher(self, vocab: grammars.Vocabulary) -> _RaisingMatcher:
        return _RaisingMatcher()


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise SoakFailure(what)


async def _expect_error(call: Awaitable[Any], error: type[sdk.StencilError]) -> str:
    """Await a call that must raise exactly the typed `error`."""
    try:
        value = await call
    except sdk.StencilError as exc:
        _expect(type(exc) is error, f"raised {type(exc).__name__} ({exc}), expected {error.__name__}")
        return Outcome.TYPED_ERROR
    raise SoakFailure(f"returned {value!r}, expected {error.__name__}")


class _Mix:
    """The request kinds of the soak, each a coroutine that checks its own result."""

    def __init__(self, llm: sdk.LLM, max_tokens: int, free_max_tokens: int) -> None:
        self.llm = llm
        self.max_tokens = max_tokens
        self.free_max_tokens = free_max_tokens

    def kinds(self) -> dict[str, tuple[int, Callable[[str], Awaitable[str]]]]:
        """Kind name -> (weight in the mix, the request)."""
        return {
            "choice": (10, self.choice),
            "regex": (10, self.regex),
            "lark": (6, self.lark),
            "literal": (6, self.literal),
            "pydantic": (8, self.pydantic),
            "json_schema": (6, self.json_schema),
            "stream": (6, self.stream),
            "free": (14, self.free),
            "cancelled": (10, self.cancelled),
            "matcher_raises": (5, self.matcher_raises),
            "slow_mask": (3, self.slow_mask),
            "bad_regex": (4, self._refused(grammars.GrammarSyntaxError, output=grammars.Regex("(ab"))),
            "bad_schema": (
                4,
                self._refused(grammars.SchemaError, output={"type": "string", "maxLength": float("inf")}),
            ),
            "unsupported_schema": (3, self._refused(grammars.UnsupportedSchemaError, output={"uniqueItems": True})),
            "bad_output": (2, self._refused(sdk.UnsupportedOutputTypeError, output=object())),
            "bad_option": (3, self._refused(sdk.RequestError, temperature=-1.0)),
        }

    def _refused(self, error: type[sdk.StencilError], **call: Any) -> Callable[[str], Awaitable[str]]:
        """A call refused before generation with `error`."""
        return lambda prompt: _expect_error(self.llm.generate(prompt, **call), error)

    async def _constrained(self, prompt: str, output: Any, constraint: grammars.Constraint) -> Any:
        result = await self.llm.run(prompt, output=output, max_tokens=self.max_tokens)
        _expect(constraint.accepts(result.text), f"the constraint rejects its own output {result.text!r}")
        return result.value

    async def choice(self, prompt: str) -> str:
        value = await self._constrained(prompt, COLOURS, grammars.compile(COLOURS))
        _expect(value in COLOURS.options, f"{value!r} is not a colour")
        return Outcome.VALUE

    async def regex(self, prompt: str) -> str:
        value = await self._constrained(prompt, DIGITS, grammars.compile(DIGITS))
        _expect(re.fullmatch(DIGITS.pattern, value) is not None, f"{value!r} is not 1-3 digits")
        return Outcome.VALUE

    async def lark(self, prompt: str) -> str:
        value = await self._constrained(prompt, PAIR, grammars.compile(PAIR))
        _expect(re.fullmatch(r"\([0-9](,[0-9]){0,2}\)", value) is not None, f"{value!r} is not a tuple of digits")
        return Outcome.VALUE

    async def literal(self, prompt: str) -> str:
        value = await self._constrained(prompt, Literal["yes", "no"], grammars.compile(grammars.Choice(["yes", "no"])))
        _expect(value in ("yes", "no"), f"{value!r} is not yes or no")
        return Outcome.VALUE

    async def pydantic(self, prompt: str) -> str:
        value = await self._constrained(prompt, Point, grammars.compile(Point))
        _expect(isinstance(value, Point), f"{value!r} is not a Point")
        return Outcome.VALUE

    async def json_schema(self, prompt: str) -> str:
        value = await self._constrained(prompt, FLAG_SCHEMA, grammars.compile(FLAG_SCHEMA))
        _expect(isinstance(value, dict) and isinstance(value.get("ok"), bool) and len(value) == 1, f"{value!r}")
        return Outcome.VALUE

    async def stream(self, prompt: str) -> str:
        partials = [partial async for partial in self.llm.stream(prompt, output=COLOURS, max_tokens=self.max_tokens)]
        _expect(bool(partials) and partials[-1] in COLOURS.options, f"stream ended with {partials[-1:]!r}")
        return Outcome.VALUE

    async def free(self, prompt: str) -> str:
        result = await self.llm.run(prompt, max_tokens=self.free_max_tokens)
        _expect(isinstance(result.value, str), f"free text gave {result.value!r}")
        if result.finish_reason != "length":
            return Outcome.VALUE
        num_tokens = result.usage.completion_tokens
        _expect(num_tokens == self.free_max_tokens, f"cut at {num_tokens} tokens")
        return Outcome.INCOMPLETE

    async def cancelled(self, prompt: str) -> str:
        """A long free-text stream, cancelled once its first text arrived."""
        started = asyncio.Event()

        async def consume() -> None:
            async for _ in self.llm.stream(prompt, max_tokens=4 * self.free_max_tokens):
                started.set()

        task = asyncio.ensure_future(consume())
        waiter = asyncio.ensure_future(started.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if task.done():  # ended (EOS or max_tokens) before any text: free text is returned either way
            exc = task.exception()
            _expect(exc is None, f"raised {exc!r}")
            return Outcome.VALUE
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return Outcome.CANCELLED
        return Outcome.VALUE  # finished between the first text and the cancel

    async def matcher_raises(self, prompt: str) -> str:
        """Through the LLM's backend: `output=` accepts only specifications, not constraint objects."""
        params = SamplingParams(max_tokens=self.max_tokens, temperature=0.0)
        request = BackendRequest([{"role": "user", "content": prompt}], params, _RaisingConstraint())
        updates = [update async for update in self.llm.backend.stream(request)]
        output = updates[-1].output
        if output is None:
            raise SoakFailure("the request ended without an output")
        _expect(output.finish_reason == "error", f"ended with {output.finish_reason!r}")
        _expect(isinstance(output.error, grammars.MatcherFailedError), f"error {output.error!r}")
        return Outcome.TYPED_ERROR

    async def slow_mask(self, prompt: str) -> str:
        call = self.llm.generate(prompt, output=grammars.Regex(SLOW_REGEX), max_tokens=self.max_tokens)
        return await _expect_error(call, sdk.ConstraintFailedError)


def _schedule(num_requests: int, weights: dict[str, int], seed: int) -> list[str]:
    """`num_requests` kinds in a seeded order: rounds of the weighted mix, each shuffled."""
    one_round = [kind for kind, weight in weights.items() for _ in range(weight)]
    rng = random.Random(seed)
    schedule: list[str] = []
    while len(schedule) < num_requests:
        schedule += rng.sample(one_round, len(one_round))
    return schedule[:num_requests]


async def run_soak(
    llm: sdk.LLM,
    num_requests: int,
    *,
    num_warmup: int,
    concurrency: int = 8,
    max_tokens: int = 32,
    free_max_tokens: int = 8,
    seed: int = 0,
) -> SoakReport:
    """Send `num_requests` mixed requests through `llm`, at most `concurrency` in flight.

    `rss_after_warmup` is taken (after a garbage collection) once `num_warmup` requests have
    finished; `rss_end` after all have. Unexpected endings are collected in `failures`, not raised.
    """
    mix = _Mix(llm, max_tokens, free_max_tokens)
    kinds = mix.kinds()
    report = SoakReport(num_requests)
    gate = asyncio.Semaphore(concurrency)
    num_done = 0
    started = time.perf_counter()

    async def one(index: int, kind: str) -> None:
        nonlocal num_done
        async with gate:
            try:
                report.outcomes[await kinds[kind][1](PROMPTS[index % len(PROMPTS)])] += 1
            except Exception as exc:  # every unexpected ending is reported, not raised
                report.failures.append(f"request {index} ({kind}): {type(exc).__name__}: {exc}")
            num_done += 1
            if num_done == num_warmup:
                gc.collect()
                report.rss_after_warmup = rss_bytes()

    schedule = _schedule(num_requests, {kind: weight for kind, (weight, _) in kinds.items()}, seed)
    report.kinds.update(schedule)
    await asyncio.gather(*(one(index, kind) for index, kind in enumerate(schedule)))
    gc.collect()
    report.rss_end = rss_bytes()
    report.seconds = time.perf_counter() - started
    return report


def _git_revision() -> str:
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
    return result.stdout.strip() or "uncommitted"


async def _soak(num_requests: int, num_warmup: int, max_tokens: int, free_max_tokens: int) -> tuple[SoakReport, bool]:
    backend = LocalBackend.load(max_mask_seconds=MAX_MASK_SECONDS)
    llm, engine = sdk.LLM(backend=backend), backend.engine
    try:
        report = await run_soak(
            llm, num_requests, num_warmup=num_warmup, max_tokens=max_tokens, free_max_tokens=free_max_tokens
        )
    finally:
        await llm.aclose()
    pool_whole = not engine.has_unfinished_requests() and (
        engine.block_manager.num_free_blocks == engine.block_manager.num_blocks
    )
    return report, pool_whole


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="60 requests")
    parser.add_argument("--requests", type=int, default=1_000, help="requests in all (default 1,000)")
    parser.add_argument("--max-tokens", type=int, default=32, help="max_tokens of constrained calls")
    parser.add_argument("--free-max-tokens", type=int, default=8, help="max_tokens of free-text calls")
    args = parser.parse_args()
    num_requests = 60 if args.smoke else args.requests
    num_warmup = min(200, num_requests // 5)
    report, pool_whole = asyncio.run(_soak(num_requests, num_warmup, args.max_tokens, args.free_max_tokens))
    print(f"{report.num_requests} requests in {report.seconds:.1f} s ({report.num_requests / report.seconds:.1f}/s)")
    print("kinds:    " + ", ".join(f"{kind} {count}" for kind, count in sorted(report.kinds.items())))
    print("outcomes: " + ", ".join(f"{outcome} {count}" for outcome, count in sorted(report.outcomes.items())))
    print(
        f"RSS after {num_warmup} requests {report.rss_after_warmup / 2**20:.1f} MiB, at the end "
        f"{report.rss_end / 2**20:.1f} MiB: growth {report.rss_growth / 2**20:+.1f} MiB"
    )
    print(f"KV block pool whole: {pool_whole}; unexpected endings: {len(report.failures)}")
    print(f"RSS growth under {MAX_RSS_GROWTH >> 20} MiB: {report.rss_growth < MAX_RSS_GROWTH}")
    for failure in report.failures[:20]:
        print("  " + failure)
    print(
        json.dumps(
            {
                "benchmark": "soak",
                "model": "SmolLM2-135M-Instruct (embedded)",
                "num_requests": report.num_requests,
                "num_warmup": num_warmup,
                "max_tokens": args.max_tokens,
                "free_max_tokens": args.free_max_tokens,
                "max_mask_seconds": MAX_MASK_SECONDS,
                "seconds": round(report.seconds, 2),
                "kinds": dict(sorted(report.kinds.items())),
                "outcomes": dict(sorted(report.outcomes.items())),
                "num_failures": len(report.failures),
                "pool_whole": pool_whole,
                "rss_after_warmup_mib": round(report.rss_after_warmup / 2**20, 1),
                "rss_end_mib": round(report.rss_end / 2**20, 1),
                "rss_growth_mib": round(report.rss_growth / 2**20, 1),
                "max_rss_growth_mib": MAX_RSS_GROWTH >> 20,
                "smoke": args.smoke,
                "git_revision": _git_revision(),
            }
        )
    )
    if report.failures or not pool_whole or report.rss_growth >= MAX_RSS_GROWTH:
        sys.exit(1)


if __name__ == "__main__":
    main()
