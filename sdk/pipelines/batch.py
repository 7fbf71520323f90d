"""`stencil run`: typed generation over a JSON Lines file of prompts, resumable, and its `--repair`.

    {"id": "r1", "prompt": "Ada Lovelace, 36."}          an input line: "prompt" (a str or chat messages)
    "Grace Hopper, 85."                                   or a bare string; "id" is optional
    {"id": "r1", "line": 1, "value": {...}}               its result line: the value, as JSON
    {"id": "r2", "line": 2, "error": {"type": "IncompleteOutputError", "message": "...", "text": "..."}}

Every prompt goes through `LLM.map` (completion order, so the engine batches up to `max_concurrency`
calls and a finished one makes room for the next), and each result is written as one line, flushed,
the moment it completes: a killed run loses at most the calls in flight. A rerun skips the inputs
whose key is already in the output (the input's "id" when it has one, else its line number), after
cutting a last line the kill left half-written.

`repair_batch` re-generates, under the constraint, the records of a results file whose value fails
validation (`sdk.Validator`) or that hold an error, and rewrites the file in place (through a
temporary file, so a kill leaves the old one whole), each record on its line.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grammars.errors import StencilError
from runtime.errors import RequestError
from sdk.client import LLM
from sdk.errors import GenerationError
from sdk.outputs import output_spec
from sdk.pipelines.mapping import MapResult
from sdk.pipelines.records import read_records
from sdk.pipelines.validate import Validator
from sdk.prompts import PromptInput

__all__ = ["BatchSummary", "Job", "Progress", "read_jobs", "repair_batch", "run_batch"]


class Progress:
    """A progress bar on standard error (tqdm): records done of the total, and the errors so far.

    Args:
        description: the bar's label.
    """

    def __init__(self, description: str) -> None:
        from tqdm import tqdm  # type: ignore[import-untyped]  # imported on use: only `stencil run` draws a bar

        self._bar = tqdm(total=None, desc=description, unit="rec", file=sys.stderr, dynamic_ncols=True)
        self.num_errors = 0

    def start(self, num_done: int, total: int) -> None:
        """Set the total (the records the run is about) and count those it skips as done."""
        self._bar.total = total
        self._bar.update(num_done)

    def done(self, has_value: bool) -> None:
        """Count a record written (with a value, or with an error)."""
        self.num_errors += not has_value
        self._bar.set_postfix(errors=self.num_errors, refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        """Draw the bar's last state and leave its line."""
        self._bar.close()


@dataclass(frozen=True)
class Job:
    """One input prompt.

    Attributes:
        line: its 1-based line in the input file.
        id: the input's id field, None when it has none.
        prompt: what `LLM.run` takes.
    """

    line: int
    id: Any
    prompt: PromptInput

    @property
    def key(self) -> str:
        """What identifies the job's result across runs: its id, else its line."""
        return _key(self.id, self.line)


@dataclass(frozen=True)
class BatchSummary:
    """What a run did.

    Attributes:
        num_inputs: prompts in the input.
        num_skipped: inputs already done (a resumed run) or not in need of repair.
        num_values, num_errors: records written this time with a value, with an error.
    """

    num_inputs: int
    num_skipped: int
    num_values: int
    num_errors: int


def read_jobs(path: str | os.PathLike[str], *, id_field: str = "id") -> list[Job]:
    """The prompts of a JSON Lines input file.

    Raises:
        RequestError: the file cannot be read, a line is not a JSON string or an object with a
            "prompt" (or "messages"), or two lines share an id (field "input", the line named).
    """
    jobs: list[Job] = []
    keys: set[str] = set()
    for record in read_records(path, layout="lines"):
        where = f"{record.file}:{record.line}"
        try:
            value = json.loads(record.text)
        except ValueError as exc:
            raise RequestError(f"{where}: not JSON: {exc}", "input") from exc
        if isinstance(value, str):
            job = Job(record.line, None, value)
        elif isinstance(value, dict) and ("prompt" in value or "messages" in value):
            job = Job(record.line, value.get(id_field), value["prompt"] if "prompt" in value else value["messages"])
        else:
            raise RequestError(f'{where}: expected a string or an object with "prompt" or "messages"', "input")
        if job.key in keys:
            raise RequestError(f"{where}: {id_field} {job.id!r} is used twice (results are keyed by it)", "input")
        keys.add(job.key)
        jobs.append(job)
    return jobs


async def run_batch(
    llm: LLM,
    jobs: Sequence[Job],
    out_path: str | os.PathLike[str],
    *,
    output: Any,
    max_concurrency: int | None = None,
    progress: Progress | None = None,
    **options: Any,
) -> BatchSummary:
    """Generate a result line for every job not yet in `out_path`, appending each as it completes.

    Args:
        llm: the model.
        jobs: the inputs (`read_jobs`).
        out_path: the results file, created or resumed.
        output: the output type of every call.
        max_concurrency: most calls in flight; None: all.
        progress: the bar to advance.
        options: the call options of `LLM.run` (max_tokens, temperature, ...).

    Raises:
        RequestError: the output file cannot be read or written, or a bad option (before any call).
    """
    done = _completed_keys(Path(out_path))
    todo = [job for job in jobs if job.key not in done]
    if progress is not None:
        progress.start(len(jobs) - len(todo), len(jobs))
    try:
        with open(out_path, "a", encoding="utf-8") as out:
            num_values, num_errors = await _generate(
                llm, todo, output, max_concurrency, options, lambda line: _write_line(out, line), progress
            )
    except OSError as exc:
        raise RequestError(f"cannot write {str(out_path)!r}: {exc.strerror or exc}", "out") from exc
    return BatchSummary(len(jobs), len(jobs) - len(todo), num_values, num_errors)


async def repair_batch(
    llm: LLM,
    jobs: Sequence[Job],
    results_path: str | os.PathLike[str],
    *,
    output: Any,
    max_concurrency: int | None = None,
    progress: Progress | None = None,
    **options: Any,
) -> BatchSummary:
    """Re-generate the records of `results_path` that hold an error or a value failing validation.

    Arguments as in `run_batch` (the progress bar counts the records left as they are). Records
    whose key matches no job are kept as they are.

    Raises:
        RequestError: the results file cannot be read or written, or a bad option (before any call).
    """
    path = Path(results_path)
    validator = Validator(output)
    by_key = {job.key: job for job in jobs}
    lines = _read_text(path).splitlines()
    broken: dict[str, int] = {}  # key -> index of its line
    for index, line in enumerate(lines):
        record = _parse_result(line)
        if record is None:
            continue
        key = _key(record.get("id"), record.get("line"))
        if key in by_key and ("value" not in record or validator.errors(record["value"])):
            broken[key] = index
    if progress is not None:
        progress.start(len(lines) - len(broken), len(lines))

    def replace(line: dict[str, Any]) -> None:
        lines[broken[_key(line.get("id"), line["line"])]] = json.dumps(line, ensure_ascii=False)

    todo = [by_key[key] for key in broken]
    num_values, num_errors = await _generate(llm, todo, output, max_concurrency, options, replace, progress)
    temporary = path.with_name(path.name + ".repairing")
    try:
        temporary.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        os.replace(temporary, path)
    except OSError as exc:
        raise RequestError(f"cannot write {str(path)!r}: {exc.strerror or exc}", "repair") from exc
    return BatchSummary(len(jobs), len(lines) - len(broken), num_values, num_errors)


async def _generate(
    llm: LLM,
    jobs: Sequence[Job],
    output: Any,
    max_concurrency: int | None,
    options: dict[str, Any],
    write: Callable[[dict[str, Any]], None],
    progress: Progress | None,
) -> tuple[int, int]:
    """Run the jobs through `llm.map` in completion order; write each result line; count values, errors."""
    spec = output_spec(output)
    outcomes = llm.map(
        (job.prompt for job in jobs), output=output, ordered=False, max_concurrency=max_concurrency, **options
    )
    num_values = num_errors = 0
    async for outcome in outcomes:
        job = jobs[outcome.index]
        line: dict[str, Any] = {"id": job.id} if job.id is not None else {}
        line["line"] = job.line
        if outcome.result is not None:
            value = outcome.result.value
            line["value"] = value if spec.adapter is None else spec.adapter.dump_python(value, mode="json")
            num_values += 1
        else:
            line["error"] = _error_record(outcome)
            num_errors += 1
        write(line)
        if progress is not None:
            progress.done(outcome.result is not None)
    return num_values, num_errors


def _error_record(outcome: MapResult[Any]) -> dict[str, Any]:
    error: StencilError | None = outcome.error
    record: dict[str, Any] = {"type": type(error).__name__, "message": str(error)}
    if isinstance(error, GenerationError):
        record["text"] = error.text
    return record


def _write_line(out: Any, line: dict[str, Any]) -> None:
    out.write(json.dumps(line, ensure_ascii=False) + "\n")
    out.flush()


def _completed_keys(path: Path) -> set[str]:
    """The keys of the results already in `path` (none when it does not exist); a last line left
    half-written by a kill is cut off first."""
    if not path.exists():
        return set()
    text = _read_text(path)
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
        os.truncate(path, len(text.encode("utf-8", errors="surrogateescape")))
    keys = set()
    for line in text.splitlines():
        record = _parse_result(line)
        if record is not None:
            keys.add(_key(record.get("id"), record.get("line")))
    return keys


def _parse_result(line: str) -> dict[str, Any] | None:
    """A result line's object, None for a line that is not one."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) and ("value" in record or "error" in record) else None


def _key(id_: Any, line: Any) -> str:
    return f"id:{json.dumps(id_, sort_keys=True)}" if id_ is not None else f"line:{line}"


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", errors="surrogateescape")
    except OSError as exc:
        raise RequestError(f"cannot read {str(path)!r}: {exc.strerror or exc}", "out") from exc
