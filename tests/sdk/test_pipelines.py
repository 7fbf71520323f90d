"""`llm.map` (order, errors, bounded concurrency, cancellation) and `stencil run` (results, resume
after a kill, `--repair`), on scripted backends, the toy engine and the real model."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest

import sdk
from runtime.engine.llm_engine import Engine
from runtime.engine.outputs import RequestUpdate
from runtime.engine.sequence import FinishReason
from sdk.backends import BackendRequest, LocalBackend, Scripted, ScriptedBackend
from sdk.cli import EXIT_USAGE, main
from sdk.pipelines.batch import Job, read_jobs, repair_batch, run_batch
from tests.sdk.conftest import assert_pool_whole

REPO = Path(__file__).resolve().parents[2]
AGE = {"type": "object", "properties": {"age": {"type": "integer", "minimum": 0}}, "required": ["age"]}


def prompt_of(request: BackendRequest) -> str:
    return request.messages[-1]["content"]


class ReversedBackend(ScriptedBackend):
    """Answers prompt "k" with 10*k, and finishes request k only after request k+1 has: completion
    order is the reverse of input order, by construction."""

    def __init__(self, num_prompts: int) -> None:
        super().__init__(lambda request: str(10 * int(prompt_of(request))))
        self.turns = [asyncio.Event() for _ in range(num_prompts)]
        self.turns[-1].set()

    async def stream(self, request: BackendRequest) -> AsyncGenerator[RequestUpdate, None]:
        index = int(prompt_of(request))
        await self.turns[index].wait()
        async with aclosing(super().stream(request)) as updates:
            async for update in updates:
                yield update
        if index > 0:
            self.turns[index - 1].set()


class CountingBackend(ScriptedBackend):
    """Echoes the prompt and records the most requests it ever had in flight at once."""

    def __init__(self) -> None:
        super().__init__(prompt_of)
        self.num_in_flight = self.max_in_flight = 0

    async def stream(self, request: BackendRequest) -> AsyncGenerator[RequestUpdate, None]:
        self.num_in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.num_in_flight)
        await asyncio.sleep(0)  # let the other calls start
        async with aclosing(super().stream(request)) as updates:
            async for update in updates:
                yield update
        self.num_in_flight -= 1


@pytest.mark.parametrize(("ordered", "expected"), [(True, [0, 1, 2, 3, 4]), (False, [4, 3, 2, 1, 0])])
async def test_map_yields_in_input_order_or_completion_order(ordered: bool, expected: list[int]) -> None:
    llm = sdk.LLM(backend=ReversedBackend(5))
    items = [item async for item in llm.map([str(k) for k in range(5)], output=int, ordered=ordered)]
    assert [item.index for item in items] == expected
    assert [item.value for item in items] == [10 * k for k in expected]
    assert [item.prompt for item in items] == [str(k) for k in expected]
    await llm.aclose()


async def test_map_bounds_the_calls_in_flight() -> None:
    backend = CountingBackend()
    llm = sdk.LLM(backend=backend)
    items = [item async for item in llm.map((f"p{k}" for k in range(10)), max_concurrency=3)]
    assert [item.value for item in items] == [f"p{k}" for k in range(10)]
    assert backend.max_in_flight == 3
    unbounded = CountingBackend()
    assert len([item async for item in sdk.LLM(backend=unbounded).map([f"p{k}" for k in range(10)])]) == 10
    assert unbounded.max_in_flight == 10  # all in flight together, for the engine to batch


async def test_a_failing_call_is_an_error_record_and_never_ends_the_batch() -> None:
    script = ["1", "not a number", Scripted("12", FinishReason.LENGTH), "4"]
    llm = sdk.LLM(backend=ScriptedBackend(script))
    items = [item async for item in llm.map(["a", "b", "c", "d"], output=int, max_concurrency=1)]
    assert [item.error is None for item in items] == [True, False, False, True]
    assert isinstance(items[1].error, sdk.ValidationError)
    assert isinstance(items[2].error, sdk.IncompleteOutputError) and items[2].error.text == "12"
    assert items[0].result is not None and items[0].result.value == 1 and items[3].value == 4
    with pytest.raises(sdk.ValidationError):
        _ = items[1].value


async def test_bad_options_raise_before_any_call() -> None:
    backend = ScriptedBackend(["1"])
    llm = sdk.LLM(backend=backend)
    with pytest.raises(sdk.RequestError, match="max_tokenz"):
        llm.map(["a"], max_tokenz=3)  # type: ignore[call-arg]
    with pytest.raises(sdk.RequestError, match="max_concurrency"):
        llm.map(["a"], max_concurrency=0)
    with pytest.raises(sdk.UnsupportedOutputTypeError):
        llm.map(["a"], output=42)
    assert backend.requests == []


async def test_leaving_the_loop_early_cancels_the_calls_in_flight(engine: Engine) -> None:
    llm = sdk.LLM(backend=LocalBackend(engine))
    async with aclosing(llm.map([f"prompt {k}" for k in range(12)], max_tokens=64)) as items:
        async for item in items:
            assert item.index == 0 and item.error is None
            break
    assert_pool_whole(engine)  # the eleven others were aborted, their blocks freed
    await llm.aclose()


@pytest.mark.parametrize(("ordered", "expected"), [(True, [0, 1, 2, 3]), (False, [3, 2, 1, 0])])
def test_sync_map_iterates_in_either_order(ordered: bool, expected: list[int]) -> None:
    with sdk.SyncLLM(backend=ReversedBackend(4)) as llm:
        items = list(llm.map(["0", "1", "2", "3"], output=int, ordered=ordered))
    assert [(item.index, item.value) for item in items] == [(k, 10 * k) for k in expected]


# stencil run, on a scripted backend


def write_prompts(path: Path, records: list[Any]) -> str:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return str(path)


def read_results(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_read_jobs_takes_strings_and_objects_and_refuses_what_it_cannot_key(tmp_path: Path) -> None:
    path = write_prompts(tmp_path / "in.jsonl", ["plain", {"id": "x", "prompt": "keyed"}, {"messages": []}])
    assert [(job.line, job.id, job.key) for job in read_jobs(path)] == [
        (1, None, "line:1"),
        (2, "x", 'id:"x"'),
        (3, None, "line:3"),
    ]
    for bad, message in [([{"id": 1, "prompt": "a"}, {"id": 1, "prompt": "b"}], "used twice"), ([3], ":1: expected")]:
        with pytest.raises(sdk.RequestError, match=message):
            read_jobs(write_prompts(tmp_path / "bad.jsonl", bad))


async def test_run_writes_one_line_per_input_and_a_rerun_only_does_what_is_missing(tmp_path: Path) -> None:
    jobs = [Job(line, f"r{line}" if line % 2 else None, str(line)) for line in range(1, 7)]
    out = tmp_path / "results.jsonl"
    # A previous run, killed: two results written, the third cut mid-line.
    out.write_text('{"id": "r1", "line": 1, "value": 1}\n{"line": 2, "value": 2}\n{"id": "r3", "li', encoding="utf-8")
    backend = ScriptedBackend(lambda request: "oops" if prompt_of(request) == "5" else prompt_of(request))
    summary = await run_batch(sdk.LLM(backend=backend), jobs, out, output=int, max_concurrency=2)
    assert sorted(prompt_of(request) for request in backend.requests) == ["3", "4", "5", "6"]
    assert (summary.num_skipped, summary.num_values, summary.num_errors) == (2, 3, 1)
    results = {(row.get("id"), row["line"]): row for row in read_results(out)}
    assert len(results) == len(read_results(out)) == 6  # each input exactly once
    assert results[("r3", 3)] == {"id": "r3", "line": 3, "value": 3}
    assert results[("r5", 5)]["error"]["type"] == "ValidationError" and results[("r5", 5)]["error"]["text"] == "oops"
    again = ScriptedBackend([])
    await run_batch(sdk.LLM(backend=again), jobs, out, output=int)
    assert again.requests == []  # errors are results too: `--repair` re-generates them


async def test_repair_regenerates_invalid_and_failed_records_in_place(tmp_path: Path) -> None:
    jobs = [Job(line, None, f"person {line}") for line in range(1, 5)]
    out = tmp_path / "results.jsonl"
    rows = [
        {"line": 1, "value": {"age": 30}},
        {"line": 2, "value": {"age": -5}},  # fails the schema
        {"line": 3, "error": {"type": "IncompleteOutputError", "message": "cut", "text": "{"}},
        {"line": 4, "value": {"age": 41}},
    ]
    out.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    backend = ScriptedBackend(lambda request: '{"age": 7}')
    summary = await repair_batch(sdk.LLM(backend=backend), jobs, out, output=AGE)
    assert sorted(prompt_of(request) for request in backend.requests) == ["person 2", "person 3"]
    assert (summary.num_skipped, summary.num_values, summary.num_errors) == (2, 2, 0)
    assert read_results(out) == [rows[0], {"line": 2, "value": {"age": 7}}, {"line": 3, "value": {"age": 7}}, rows[3]]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--output", "nope.json", "--input", "in.jsonl", "--out", "o.jsonl"], "cannot read"),
        (["--output", '{"type": "integer"}', "--input", "missing.jsonl", "--out", "o.jsonl"], "cannot read"),
        (["--output", '{"type": "integer"}', "--input", "in.jsonl", "--out", "o", "--concurrency", "0"], "concurrency"),
        (["--output", '{"type": "integer"}', "--input", "in.jsonl", "--out", "o", "--max-tokens", "0"], "max_tokens"),
        (["--output", '{"type": "string", "format": "nope"}', "--input", "in.jsonl", "--out", "o"], "unknown format"),
    ],
)
def test_run_usage_errors_exit_2_before_the_model_loads(
    argv: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    write_prompts(tmp_path / "in.jsonl", ["hi"])
    monkeypatch.setattr(sdk.LLM, "__init__", lambda *args, **kwargs: pytest.fail("the model was loaded"))
    assert main(["run", *argv]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("stencil: error: ") and message in err


# stencil run, on the real model

QUESTIONS = [f"What is {a} plus {b}? Answer with a number." for a in range(20) for b in range(10)]  # 200 prompts


def num_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def stencil(*argv: str) -> list[str]:
    return [sys.executable, "-m", "sdk", *argv]


@pytest.mark.slow
def test_run_processes_200_prompts_with_a_progress_bar_and_resumes_after_a_kill(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "in.jsonl", [{"id": f"q{k}", "prompt": q} for k, q in enumerate(QUESTIONS)])
    out = tmp_path / "results.jsonl"
    argv = stencil("run", "--output", "builtins:int", "--input", prompts, "--out", str(out), "--max-tokens", "4")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first = subprocess.Popen([*argv, "--concurrency", "8"], env=env, stderr=subprocess.DEVNULL)
    try:
        while first.poll() is None and num_lines(out) < 20:
            time.sleep(0.05)
        assert first.poll() is None, "the first run ended before it could be killed midway"
        first.send_signal(signal.SIGKILL)
    finally:
        first.wait()
    num_before = num_lines(out)  # whole lines: a half-written last one is cut on resume
    assert 20 <= num_before < 200
    second = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    assert second.returncode in (0, 1), second.stderr
    assert "200/200" in second.stderr  # tqdm's bar, counting the records the first run wrote
    assert f"{num_before} left as they were" in second.stderr
    rows = read_results(out)
    assert sorted(row["id"] for row in rows) == sorted(f"q{k}" for k in range(200))  # each exactly once
    values = [row["value"] for row in rows if "value" in row]
    assert len(values) >= 190 and all(isinstance(value, int) for value in values)


@pytest.mark.slow
def test_repair_on_the_real_model_makes_every_record_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prompts = write_prompts(tmp_path / "in.jsonl", QUESTIONS[:6])
    out = tmp_path / "results.jsonl"
    rows = [{"line": 1, "value": "twelve"}, {"line": 2, "value": 3}, {"line": 3, "error": {"type": "X", "message": ""}}]
    out.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    status = main(["run", "--output", "builtins:int", "--input", prompts, "--repair", str(out), "--max-tokens", "4"])
    assert status == 0, capsys.readouterr().err
    repaired = read_results(out)
    assert [row["line"] for row in repaired] == [1, 2, 3] and repaired[1] == rows[1]
    assert all(isinstance(row["value"], int) for row in repaired)
