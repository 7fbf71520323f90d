"""Load test of `stencil serve` on loopback: many concurrent streaming clients, mixed requests.

The server (the embedded SmolLM2 unless `--model`) runs as a subprocess on 127.0.0.1, a free port.
`--clients` streaming clients (httpx, SSE) share `--requests` chat requests, a seeded mix of:

- constrained: a JSON Schema (`response_format`), a regex (vLLM `structured_outputs`), a choice
  (vLLM's legacy `guided_choice`); each language is finite and fits `max_tokens`, so the constraint
  ends the output: the answer must finish with "stop" and match (jsonschema / `re.fullmatch` / `in`);
- free text: ends with "stop" or "length", never more than `max_tokens` completion tokens;
- tools: `tool_choice` "required" (one or more calls, each named `get_weather`, its arguments valid
  against the tool's schema, finish_reason "tool_calls") or "auto" (such calls, or text);
- about one in eight of them disconnects after its second delta, mid-answer.

Each stream must be well formed (a first `role` delta, no empty content delta, one finish_reason,
a usage chunk, `data: [DONE]`). Afterwards the server's `/metrics` must show no 5xx and the KV
block pool whole again (no blocks in use, no request running or waiting). One request of each kind
runs first as a warm-up (grammar compilation, first masks) and is not counted.

Reported, over the counted requests: requests/s (all of them, wall clock), output tokens/s (the
completed ones' usage), p50/p99 time to first token (to the first content or tool-call delta) and
latency (to `[DONE]`), and how many disconnects the server aborted before they finished.

    python benchmarks/serve.py              # 64 clients, 192 requests
    python benchmarks/serve.py --quick      # 16 clients, 32 requests
    python benchmarks/serve.py --url http://127.0.0.1:8000/v1 --model-name NAME   # a running server

Needs the package importable (scripts/install.sh installs it editable; or PYTHONPATH=.).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import re
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jsonschema

#: Completion budgets: a constrained answer's language fits its budget; free text is cut by its own.
MAX_TOKENS = {"json_schema": 48, "regex": 24, "choice": 8, "free": 24, "tool_required": 64, "tool_auto": 64}
KINDS = tuple(MAX_TOKENS)
#: One request in this many (seeded) disconnects midway.
DISCONNECT_EVERY = 8
#: Deltas a disconnecting client reads before it closes the connection.
DELTAS_BEFORE_DISCONNECT = 2
#: How long the server may take to free the pool once the last client is done (aborts land asynchronously).
POOL_DRAIN_SECONDS = 30.0

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 12},
        "celsius": {"type": "integer", "minimum": -50, "maximum": 50},
    },
    "required": ["city", "celsius"],
    "additionalProperties": False,
}
CODE_REGEX = r"[A-Z]{2}-[0-9]{3}"
COLOURS = ["red", "green", "blue", "yellow"]
TOOL_PARAMETERS = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 16}},
    "required": ["city"],
    "additionalProperties": False,
}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": TOOL_PARAMETERS,
    },
}
CITIES = ["Paris", "Lisbon", "Oslo", "Cairo", "Lima", "Seoul", "Quito", "Perth"]


@dataclass(frozen=True)
class Job:
    """One request of the mix: its kind, number (varies the prompt) and whether its client leaves early."""

    kind: str
    number: int
    disconnects: bool = False

    def body(self, model: str) -> dict[str, Any]:
        city = CITIES[self.number % len(CITIES)]
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": MAX_TOKENS[self.kind],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self.kind == "json_schema":
            prompt = f"Report the weather in {city} as JSON."
            schema = {"name": "weather", "schema": WEATHER_SCHEMA, "strict": True}
            body["response_format"] = {"type": "json_schema", "json_schema": schema}
        elif self.kind == "regex":
            prompt = f"Give a two-letter, three-digit code for {city}."
            body["structured_outputs"] = {"regex": CODE_REGEX}
        elif self.kind == "choice":
            prompt = f"Pick the colour that suits {city}."
            body["guided_choice"] = COLOURS
        elif self.kind == "free":
            prompt = f"Write one sentence about {city}."
        else:
            prompt = f"What is the weather in {city}?"
            body["tools"] = [WEATHER_TOOL]
            body["tool_choice"] = "required" if self.kind == "tool_required" else "auto"
        body["messages"] = [{"role": "user", "content": prompt}]
        return body


@dataclass
class Answer:
    """What one client saw."""

    job: Job
    status: int
    completed: bool = False  # read to `data: [DONE]`
    content: str = ""
    tool_calls: dict[int, dict[str, str]] = field(default_factory=dict)  # index -> id, name, arguments
    finish_reasons: list[str] = field(default_factory=list)
    completion_tokens: int = 0
    time_to_first_token: float | None = None
    latency: float | None = None
    problems: list[str] = field(default_factory=list)  # malformed stream events


@dataclass
class LoadReport:
    """The run: every answer, the failures found, the wall time, and the server's counters."""

    answers: list[Answer]
    seconds: float
    failures: list[str]
    server_statuses: Counter[str]
    server_finished: int  # requests the server generated to the end (its latency histogram's count)
    pool_whole: bool

    @property
    def completed(self) -> list[Answer]:
        return [answer for answer in self.answers if answer.completed]

    @property
    def num_disconnected(self) -> int:
        return sum(1 for answer in self.answers if answer.job.disconnects and not answer.completed)


def mix(num_requests: int, seed: int = 0) -> list[Job]:
    """The requests: the kinds in turn, a seeded eighth of them disconnecting, in a seeded order."""
    rng = random.Random(seed)
    leaving = set(rng.sample(range(num_requests), num_requests // DISCONNECT_EVERY))
    jobs = [Job(KINDS[number % len(KINDS)], number, number in leaving) for number in range(num_requests)]
    rng.shuffle(jobs)
    return jobs


async def send(client: httpx.AsyncClient, job: Job, model: str) -> Answer:
    """Stream one request, reassembling content and tool calls; leave early if the job says so."""
    started = time.perf_counter()
    async with client.stream("POST", "/chat/completions", json=job.body(model)) as response:
        answer = Answer(job, response.status_code)
        if response.status_code != 200:
            await response.aread()
            answer.problems.append(f"HTTP {response.status_code}: {response.text[:200]}")
            return answer
        num_deltas = 0
        has_role = False
        async for line in response.aiter_lines():
            if not line:
                continue
            if not line.startswith("data: "):
                answer.problems.append(f"not an SSE data line: {line[:80]!r}")
                continue
            if line == "data: [DONE]":
                answer.completed = True
                answer.latency = time.perf_counter() - started
                break
            chunk = json.loads(line.removeprefix("data: "))
            if chunk.get("usage"):
                answer.completion_tokens = chunk["usage"]["completion_tokens"]
            for choice in chunk["choices"]:
                delta = choice["delta"]
                if "role" in delta:
                    has_role = True
                elif not has_role:
                    answer.problems.append("a delta before the role delta")
                if "content" in delta and delta["content"] is not None:
                    if delta["content"] == "":
                        answer.problems.append("an empty content delta")
                    answer.content += delta["content"]
                for call in delta.get("tool_calls") or ():
                    _add_call_fragment(answer, call)
                if choice.get("finish_reason"):
                    answer.finish_reasons.append(choice["finish_reason"])
                if delta.get("content") or delta.get("tool_calls"):
                    num_deltas += 1
                    if answer.time_to_first_token is None:
                        answer.time_to_first_token = time.perf_counter() - started
            if job.disconnects and num_deltas >= DELTAS_BEFORE_DISCONNECT:
                break  # leaving the `async with` closes the connection mid-stream
    return answer


def _add_call_fragment(answer: Answer, fragment: dict[str, Any]) -> None:
    index = fragment["index"]
    function = fragment.get("function") or {}
    if index not in answer.tool_calls:
        if not (fragment.get("id", "").startswith("call_") and fragment.get("type") == "function"):
            answer.problems.append(f"a tool call's first delta without its id and type: {fragment}")
        answer.tool_calls[index] = {"id": fragment.get("id", ""), "name": function.get("name", ""), "arguments": ""}
    elif "id" in fragment or "name" in function:
        answer.problems.append(f"a tool call's id or name repeated: {fragment}")
    answer.tool_calls[index]["arguments"] += function.get("arguments") or ""


def check(answer: Answer) -> str | None:
    """What is wrong with a completed answer (None: nothing); an unfinished one was a disconnect."""
    job = answer.job
    where = f"{job.kind} #{job.number}"
    if answer.status >= 500:
        return f"{where}: HTTP {answer.status}"
    if answer.problems:
        return f"{where}: {answer.problems[0]}"
    if not answer.completed:
        return None if job.disconnects else f"{where}: the stream ended without [DONE]"
    if len(answer.finish_reasons) != 1:
        return f"{where}: finish reasons {answer.finish_reasons}"
    finish = answer.finish_reasons[0]
    if not 0 < answer.completion_tokens <= MAX_TOKENS[job.kind]:
        return f"{where}: {answer.completion_tokens} completion tokens for max_tokens {MAX_TOKENS[job.kind]}"
    if answer.tool_calls:
        return _check_calls(answer, where)
    if job.kind == "tool_required":
        return f"{where}: no tool call ({finish}), content {answer.content!r}"
    if job.kind in ("free", "tool_auto"):
        return None if finish in ("stop", "length") else f"{where}: finish_reason {finish}"
    if finish != "stop":
        return f"{where}: finish_reason {finish} for a constraint that fits max_tokens: {answer.content!r}"
    if not _is_valid(job.kind, answer.content):
        return f"{where}: {answer.content!r} violates its constraint"
    return None


def _is_valid(kind: str, text: str) -> bool:
    if kind == "regex":
        return re.fullmatch(CODE_REGEX, text) is not None
    if kind == "choice":
        return text in COLOURS
    try:
        jsonschema.validate(json.loads(text), WEATHER_SCHEMA)
    except (ValueError, jsonschema.ValidationError):
        return False
    return True


def _check_calls(answer: Answer, where: str) -> str | None:
    if answer.job.kind not in ("tool_required", "tool_auto"):
        return f"{where}: tool calls without tools"
    if answer.finish_reasons != ["tool_calls"] or answer.content:
        return f"{where}: finish_reason {answer.finish_reasons} and content {answer.content!r} beside calls"
    for call in answer.tool_calls.values():
        if call["name"] != "get_weather":
            return f"{where}: a call of {call['name']!r}"
        try:
            jsonschema.validate(json.loads(call["arguments"]), TOOL_PARAMETERS)
        except (ValueError, jsonschema.ValidationError):
            return f"{where}: arguments {call['arguments']!r} violate the tool's schema"
    return None


async def scrape(client: httpx.AsyncClient) -> dict[str, float]:
    """The server's Prometheus samples, by name with labels (`stencil_requests_total{...}`)."""
    response = await client.get("/metrics")
    response.raise_for_status()
    samples = {}
    for line in response.text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def _statuses(samples: dict[str, float]) -> Counter[str]:
    statuses: Counter[str] = Counter()
    for name, value in samples.items():
        found = re.fullmatch(r'stencil_requests_total\{endpoint="/v1/chat/completions",status="(\d+)"\}', name)
        if found:
            statuses[found[1]] += int(value)
    return statuses


def _is_idle(samples: dict[str, float]) -> bool:
    names = ("stencil_kv_blocks_in_use", "stencil_requests_running", "stencil_queue_depth")
    return all(samples[name] == 0 for name in names)


async def run_load(base_url: str, model: str, *, num_clients: int, num_requests: int, seed: int = 0) -> LoadReport:
    """Warm up, send the mix with `num_clients` concurrent clients, then check the server is whole.

    Args:
        base_url: the server's URL, ending in /v1.
        model: the served model name.
        num_clients: concurrent streaming clients (connections).
        num_requests: requests in the mix (they share the clients).
        seed: the mix's seed.
    """
    root = base_url.removesuffix("/v1")
    limits = httpx.Limits(max_connections=num_clients, max_keepalive_connections=num_clients)
    timeout = httpx.Timeout(600.0)
    async with (
        httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout) as client,
        httpx.AsyncClient(base_url=root, timeout=timeout) as admin,
    ):
        for kind in KINDS:  # warm-up, one at a time
            await send(client, Job(kind, 0), model)
        before = await scrape(admin)
        queue: asyncio.Queue[Job] = asyncio.Queue()
        for job in mix(num_requests, seed):
            queue.put_nowait(job)
        answers: list[Answer] = []

        async def worker() -> None:
            while not queue.empty():
                answers.append(await send(client, queue.get_nowait(), model))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(num_clients)))
        seconds = time.perf_counter() - started
        deadline = time.monotonic() + POOL_DRAIN_SECONDS
        after = await scrape(admin)
        while not _is_idle(after) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            after = await scrape(admin)
    statuses = _statuses(after) - _statuses(before)
    failures = [problem for problem in map(check, answers) if problem is not None]
    failures += [
        f"the server answered {count} x HTTP {status}" for status, count in statuses.items() if status >= "500"
    ]
    pool_whole = _is_idle(after)
    if not pool_whole:
        failures.append(f"the KV pool is not whole: {after['stencil_kv_blocks_in_use']:.0f} blocks still in use")
    finished = int(after["stencil_request_latency_seconds_count"] - before["stencil_request_latency_seconds_count"])
    return LoadReport(answers, seconds, failures, statuses, finished, pool_whole)


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile (`fraction` in (0, 1]); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


def summary(report: LoadReport, num_clients: int) -> dict[str, Any]:
    """The figures of a run."""
    completed = report.completed
    tokens = sum(answer.completion_tokens for answer in completed)
    first = [answer.time_to_first_token for answer in completed if answer.time_to_first_token is not None]
    latencies = [answer.latency for answer in completed if answer.latency is not None]
    return {
        "clients": num_clients,
        "requests": len(report.answers),
        "completed": len(completed),
        "disconnected": report.num_disconnected,
        "aborted_by_server": len(report.answers) - report.server_finished,
        "seconds": round(report.seconds, 2),
        "requests_per_s": round(len(report.answers) / report.seconds, 2),
        "output_tokens_per_s": round(tokens / report.seconds, 1),
        "ttft_p50_s": round(percentile(first, 0.5), 3),
        "ttft_p99_s": round(percentile(first, 0.99), 3),
        "latency_p50_s": round(percentile(latencies, 0.5), 3),
        "latency_p99_s": round(percentile(latencies, 0.99), 3),
        "kinds": dict(Counter(answer.job.kind for answer in report.answers)),
        "server_statuses": dict(report.server_statuses),
        "failures": len(report.failures),
        "pool_whole": report.pool_whole,
    }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def server_process(model: str | None, served_model_name: str) -> Iterator[str]:
    """`stencil serve` in a subprocess on a free loopback port; yields its base URL once it answers.

    The server's access log (stdout) is dropped; its errors (stderr) show.
    """
    port = _free_port()
    command = [sys.executable, "-c", "import sys, sdk.cli; sys.exit(sdk.cli.main())", "serve", "--port", str(port)]
    command += ["--served-model-name", served_model_name, "--max-concurrent-requests", "1024"]
    if model is not None:
        command += ["--model", model]
    process = subprocess.Popen(command, cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.DEVNULL)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with status {process.returncode}")
            try:
                if httpx.get(f"{base_url}/models", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        yield base_url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _git_revision() -> str:
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
    return result.stdout.strip() or "uncommitted"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 clients, 32 requests")
    parser.add_argument("--clients", type=int, default=None, help="concurrent streaming clients (default 64)")
    parser.add_argument("--requests", type=int, default=None, help="requests in the mix (default 192)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=None, help="the model to serve (default: the embedded SmolLM2)")
    parser.add_argument("--url", default=None, help="load a running server at this /v1 URL instead")
    parser.add_argument("--model-name", default="SmolLM2-135M-Instruct", help="the served model name")
    args = parser.parse_args()
    num_clients = args.clients or (16 if args.quick else 64)
    num_requests = args.requests or (32 if args.quick else 192)

    async def load(base_url: str) -> LoadReport:
        return await run_load(base_url, args.model_name, num_clients=num_clients, num_requests=num_requests)

    if args.url is not None:
        report = asyncio.run(load(args.url))
    else:
        with server_process(args.model, args.model_name) as base_url:
            report = asyncio.run(load(base_url))
    figures = summary(report, num_clients)
    print(
        f"{figures['requests']} requests from {num_clients} streaming clients in {figures['seconds']} s: "
        f"{figures['completed']} completed, {figures['disconnected']} disconnected midway "
        f"({figures['aborted_by_server']} aborted by the server before their end)"
    )
    print(f"requests/s        {figures['requests_per_s']}")
    print(f"output tokens/s   {figures['output_tokens_per_s']}")
    print(f"time to 1st token p50 {figures['ttft_p50_s']} s, p99 {figures['ttft_p99_s']} s")
    print(f"latency           p50 {figures['latency_p50_s']} s, p99 {figures['latency_p99_s']} s")
    print(f"server statuses   {figures['server_statuses']}; KV block pool whole: {figures['pool_whole']}")
    for failure in report.failures:
        print("  FAILURE " + failure)
    print(json.dumps({"benchmark": "serve", "git_revision": _git_revision(), **figures}))
    if report.failures:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
