"""The `stencil` command line: streaming generation and one-line typed errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sdk.cli import EXIT_USAGE, main

REPO = Path(__file__).resolve().parents[2]


def test_generate_streams_a_greedy_completion(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["generate", "What is the capital of France?", "--temperature", "0", "--max-tokens", "12"])
    out, err = capsys.readouterr()
    assert status == 0
    assert "Paris" in out and out.endswith("\n")


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
