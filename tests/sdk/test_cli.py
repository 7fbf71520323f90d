"""The `stencil` command line: streaming generation, greedy by default, `--version`, one-line typed errors."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import runtime
from sdk.cli import EXIT_USAGE, main

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_generate_streams_a_greedy_completion(capsys: pytest.CaptureFixture[str]) -> None:
    """float32 reproduces transformers' greedy text, so its answer is checked. The default bfloat16
    path may flip a near-tie on one CPU and not another (here the first token: "The" leads "L" by
    0.08 in float32, and on an AMX Xeon bfloat16 picks "L"), so its streamed text is checked against
    the engine's own greedy completion of the same prompt."""
    prompt = "What is the capital of France?"
    status = main(["generate", prompt, "--max-tokens", "12", "--dtype", "float32"])  # greedy by default
    out, _ = capsys.readouterr()
    assert status == 0
    assert "Paris" in out and out.endswith("\n")
    status = main(["generate", prompt, "--max-tokens", "12"])
    out, _ = capsys.readouterr()
    greedy = runtime.load().generate([prompt], runtime.SamplingParams(max_tokens=12, temperature=0.0))[0]
    assert status == 0
    assert out == greedy.outputs[0].text + "\n"


class RecordingEngine:
    """Stands in for a loaded model: records the sampling parameters it is asked to stream with."""

    def __init__(self) -> None:
        self.params: list[runtime.SamplingParams] = []

    def stream(self, prompt: str, params: runtime.SamplingParams) -> list[Any]:
        self.params.append(params)
        return [SimpleNamespace(text="ok")]


@pytest.mark.parametrize(("flags", "temperature"), [([], 0.0), (["--temperature", "0.8", "--seed", "1"], 0.8)])
def test_generate_is_greedy_unless_a_temperature_is_given(
    flags: list[str], temperature: float, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = RecordingEngine()
    monkeypatch.setattr(runtime, "load", lambda model, dtype: engine)
    assert main(["generate", "hi", *flags]) == 0
    assert [params.temperature for params in engine.params] == [temperature]
    assert capsys.readouterr().out == "ok\n"


def test_version_prints_the_installed_distribution_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"stencil {importlib.metadata.version('stencil-llm')}\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["generate", "hi", "--max-tokens", "0"], "max_tokens"),
        (["generate", "hi", "--top-p", "1.5"], "top_p"),
        (["generate", "hi", "--temperature", "-1"], "temperature"),
        (["generate", "hi", "--model", "/nonexistent/model.gguf"], "no such file"),
    ],
)
def test_typed_errors_print_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == EXIT_USAGE
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("stencil: error: ") and message in err and err.count("\n") == 1


@pytest.mark.slow
def test_the_module_entry_point_reports_errors_without_a_traceback() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sdk", "generate", "hi", "--max-tokens", "-3"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == EXIT_USAGE
    assert "Traceback" not in result.stderr and "max_tokens" in result.stderr


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["generate"])
    assert exit_info.value.code == EXIT_USAGE
