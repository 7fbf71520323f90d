"""`stencil serve`'s options, and that the command line does not load the server stack until asked."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sdk.cli import build_parser, main
from sdk.options import Speculative


def test_serve_defaults_bind_loopback() -> None:
    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.api_key, args.model, args.served_model_name) == (
        "127.0.0.1",
        8000,
        None,
        None,
        None,
    )
    args = build_parser().parse_args(["serve", "--port", "9000", "--api-key", "k", "--max-concurrent-requests", "4"])
    assert (args.port, args.api_key, args.max_concurrent_requests) == (9000, "k", 4)


def test_the_cli_imports_the_server_lazily() -> None:
    probe = "import sys, sdk.cli; sdk.cli.build_parser(); print('sdk.server' in sys.modules, 'fastapi' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], None),
        (["--speculative", "auto"], "auto"),
        (
            ["--draft-model", "small.gguf"],
            Speculative(draft_model="small.gguf", jump_forward=False, prompt_lookup=False),
        ),
        (
            ["--speculative", "ngram", "--draft-model", "small.gguf"],
            Speculative(draft_model="small.gguf", jump_forward=False, prompt_lookup=True),
        ),
        (
            ["--speculative", "auto", "--draft-model", "small.gguf"],
            Speculative(draft_model="small.gguf", jump_forward=True, prompt_lookup=True),
        ),
    ],
)
def test_serve_passes_the_fast_paths_it_is_given(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], expected: object
) -> None:
    import sdk.server

    seen: dict[str, object] = {}
    monkeypatch.setattr(sdk.server, "serve", lambda model, **options: seen.update(options))
    assert main(["serve", *argv]) == 0
    assert seen["speculative"] == expected


def test_serve_freezes_what_start_up_made_before_serving(monkeypatch: pytest.MonkeyPatch) -> None:
    """`serve` loads the model, makes the app, then takes every object so far out of the collector's
    generations (`freeze_start_up`) before the port opens: full collections then walk only what
    serving makes."""
    import gc

    import uvicorn

    from sdk.server import app as server_app

    frozen: list[int] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: frozen.append(gc.get_freeze_count()))
    gc.unfreeze()
    try:
        server_app.serve()
    finally:
        gc.unfreeze()
    assert len(frozen) == 1 and frozen[0] > 10_000  # torch's modules, the model and the app at least
