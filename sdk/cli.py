"""The `stencil` command line.

    stencil generate "prompt" [--model PATH] [--max-tokens N] [--temperature T] [--top-p P] [--seed S]
    stencil --version

`generate` renders the prompt through the model's chat template as one user message and streams the
completion to standard output as it is generated. It decodes greedily unless `--temperature` says
otherwise, like the SDK; other sampling options left out take the defaults of
`runtime.SamplingParams`. Any Stencil error (a bad option value, a missing model file) prints one
line, `stencil: error: ...`, to standard error and exits with status 2, as argparse does for bad
usage; no traceback.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from collections.abc import Sequence
from typing import Any

from grammars.errors import StencilError

#: Exit status for usage errors and typed Stencil errors (argparse's convention).
EXIT_USAGE = 2
#: Exit status after Ctrl-C (128 + SIGINT).
EXIT_INTERRUPTED = 130
#: The distribution whose version `stencil --version` prints.
DISTRIBUTION = "stencil-llm"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every `stencil` subcommand."""
    parser = argparse.ArgumentParser(prog="stencil", description="Typed, valid output from language models.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    generate = commands.add_parser(
        "generate", help="stream a completion of a prompt", description="Stream a completion of a prompt."
    )
    generate.add_argument("prompt", help="the user message (rendered with the model's chat template)")
    generate.add_argument(
        "--model", default=None, help="a .gguf file or Hugging Face folder (default: SmolLM2-135M-Instruct)"
    )
    generate.add_argument(
        "--dtype", default=None, choices=["float32", "bfloat16"], help="activation dtype (default: bfloat16)"
    )
    generate.add_argument("--max-tokens", type=int, default=None, help="most tokens to generate (default: 256)")
    generate.add_argument(
        "--temperature", type=float, default=0.0, help="sampling temperature (default: 0, greedy, as in the SDK)"
    )
    generate.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass in (0, 1] (default: 1.0)")
    generate.add_argument("--seed", type=int, default=None, help="seed for reproducible sampling")
    generate.set_defaults(handler=_generate)
    return parser


def _version() -> str:
    """The installed distribution's version (a source tree that was never installed has none)."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return f"unknown ({DISTRIBUTION} is not installed)"


def _generate(args: argparse.Namespace) -> int:
    import runtime  # imported on use, so `stencil --help` does not load torch

    options: dict[str, Any] = {
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "seed": args.seed,
    }
    # Validate before loading the model, so a bad option fails in milliseconds.
    params = runtime.SamplingParams(**{name: value for name, value in options.items() if value is not None})
    engine = runtime.load(args.model, args.dtype)
    for update in engine.stream(args.prompt, params):
        sys.stdout.write(update.text)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `stencil` command line.

    Args:
        argv: the arguments after the program name; None reads `sys.argv`.

    Returns:
        The exit status: 0 on success, 2 for usage or Stencil errors, 130 when interrupted.
    """
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except StencilError as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"stencil: error: {first_line}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
