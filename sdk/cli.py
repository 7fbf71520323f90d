"""The `stencil` command line.

    stencil generate "prompt" [--model PATH] [--max-tokens N] [--temperature T] [--top-p P] [--seed S]
    stencil validate SCHEMA FILE... [--format text|json] [--layout lines|document]
    stencil run --output SCHEMA --input prompts.jsonl (--out results.jsonl | --repair results.jsonl)
                [--model PATH] [--max-tokens N] [--concurrency N] [--id-field NAME]
    stencil serve [--model PATH] [--host 127.0.0.1] [--port 8000] [--api-key K] [--served-model-name NAME]
                  [--max-concurrent-requests N]
    stencil --version

`generate` renders the prompt through the model's chat template as one user message and streams the
completion to standard output as it is generated. It decodes greedily unless `--temperature` says
otherwise, like the SDK; other sampling options left out take the defaults of
`runtime.SamplingParams`. Any Stencil error (a bad option value, a missing model file) prints one
line, `stencil: error: ...`, to standard error and exits with status 2, as argparse does for bad
usage; no traceback.

`validate` checks JSON documents, JSON Lines files and standard input (`-`) against a JSON Schema
file, a Python type (`module:Name`) or a Lark grammar (`.lark`); it prints each violation as
`file:line: /pointer: message` (or, with `--format json`, one JSON object per violation and a
`{"summary": ...}` last) and exits 0 when every record is valid, 1 when some are not, 2 for usage or
schema errors. `run` generates one typed result line per input prompt, resumably, with a progress
bar on standard error (see `sdk.pipelines.batch`); it exits 1 when some records of the run hold an
error. SCHEMA arguments are read by `sdk.pipelines.specs.load_spec`.
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
    _add_validate(commands)
    _add_run(commands)
    _add_serve(commands)
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


def _add_validate(commands: Any) -> None:
    validate = commands.add_parser(
        "validate",
        help="validate JSON / JSON Lines against a schema, type or grammar",
        description="Validate JSON documents and JSON Lines (or stdin, '-') against a JSON Schema file, "
        "a Python type (module:Name) or a Lark grammar (.lark). Exit 0: all valid; 1: some invalid; 2: usage error.",
    )
    validate.add_argument("schema", help="a .json schema file, an inline JSON Schema, a .lark grammar, or module:Name")
    validate.add_argument("files", nargs="+", metavar="FILE", help="JSON (.json), JSON Lines (.jsonl) or '-' for stdin")
    validate.add_argument("--format", choices=["text", "json"], default="text", help="how violations are printed")
    validate.add_argument(
        "--layout",
        choices=["lines", "document"],
        default=None,
        help="records per line, or one per file (default: by suffix)",
    )
    validate.set_defaults(handler=_validate)


def _validate(args: argparse.Namespace) -> int:
    import json

    from sdk.pipelines.specs import load_spec
    from sdk.pipelines.validate import ValidationReport, Validator, check_files

    validator = Validator(load_spec(args.schema))
    report = ValidationReport(num_files=len(args.files))
    for check in check_files(validator, args.files, layout=args.layout):
        report.add(check)
        for violation in check.violations:
            print(json.dumps(violation.to_json(), ensure_ascii=False) if args.format == "json" else violation)
    if args.format == "json":
        print(json.dumps({"summary": report.summary()}))
    else:
        verdict = "all valid" if report.is_valid else f"{report.num_invalid} invalid"
        print(f"stencil: {report.num_records} records in {report.num_files} file(s): {verdict}", file=sys.stderr)
    return 0 if report.is_valid else 1


def _add_run(commands: Any) -> None:
    run = commands.add_parser(
        "run",
        help="typed generation over a JSON Lines file of prompts (resumable)",
        description="Generate one typed result line per prompt of a JSON Lines file, resumably, with a progress bar.",
    )
    run.add_argument(
        "--output", required=True, help="a .json schema file, inline JSON Schema, .lark grammar, or module:Name"
    )
    run.add_argument("--input", required=True, help='prompts, one per line: a string or {"id": ..., "prompt": ...}')
    target = run.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", help="results file: created, or resumed (inputs already in it are skipped)")
    target.add_argument("--repair", help="results file whose invalid or failed records are re-generated in place")
    run.add_argument(
        "--model", default=None, help="a .gguf file or Hugging Face folder (default: SmolLM2-135M-Instruct)"
    )
    run.add_argument("--max-tokens", type=int, default=None, help="most tokens per result (default: the SDK's, 512)")
    run.add_argument("--concurrency", type=int, default=64, help="most prompts in flight at once (default: 64)")
    run.add_argument("--id-field", default="id", help="input field that keys results across runs (default: id)")
    run.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    import asyncio

    import runtime
    from sdk.outputs import output_spec
    from sdk.pipelines.batch import read_jobs
    from sdk.pipelines.mapping import check_max_concurrency
    from sdk.pipelines.specs import load_spec

    # Everything is checked before the model loads, so a mistake fails in milliseconds.
    output = load_spec(args.output, field="output")
    output_spec(output)
    check_max_concurrency(args.concurrency)
    options = {} if args.max_tokens is None else {"max_tokens": args.max_tokens}
    runtime.SamplingParams(**options)
    jobs = read_jobs(args.input, id_field=args.id_field)
    summary = asyncio.run(_run_jobs(args, output, jobs, options))
    print(
        f"stencil: {summary.num_values + summary.num_errors} records written ({summary.num_errors} errors), "
        f"{summary.num_skipped} left as they were, to {args.out or args.repair}",
        file=sys.stderr,
    )
    return 0 if summary.num_errors == 0 else 1


async def _run_jobs(args: argparse.Namespace, output: Any, jobs: Any, options: dict[str, Any]) -> Any:
    from sdk.client import LLM
    from sdk.pipelines.batch import Progress, repair_batch, run_batch

    async with LLM(args.model) as llm:
        progress = Progress("repair" if args.repair else "run")
        try:
            if args.repair:
                return await repair_batch(
                    llm,
                    jobs,
                    args.repair,
                    output=output,
                    max_concurrency=args.concurrency,
                    progress=progress,
                    **options,
                )
            return await run_batch(
                llm, jobs, args.out, output=output, max_concurrency=args.concurrency, progress=progress, **options
            )
        finally:
            progress.close()


def _add_serve(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="serve the model over an OpenAI-compatible HTTP API",
        description="Serve the model over an OpenAI-compatible HTTP API (/v1/chat/completions, /v1/completions, "
        "/v1/models, /health, /metrics) with structured outputs and tool calling; see docs/server.md.",
    )
    serve.add_argument(
        "--model", default=None, help="a .gguf file or Hugging Face folder (default: SmolLM2-135M-Instruct)"
    )
    serve.add_argument(
        "--dtype", default=None, choices=["float32", "bfloat16"], help="activation dtype (default: bfloat16)"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="port to bind (default: 8000)")
    serve.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on /v1/* (default: none)")
    serve.add_argument(
        "--served-model-name", default=None, help="the model name clients send (default: the model's file name)"
    )
    serve.add_argument(
        "--max-concurrent-requests",
        type=int,
        default=None,
        help="requests in flight before new ones get HTTP 429 with Retry-After (default: 256)",
    )
    serve.add_argument(
        "--speculative",
        default=None,
        choices=["ngram", "auto"],
        help="fast paths: prompt lookup ('ngram'), or lookup and jump-forward ('auto'); outputs unchanged "
        "(default: off)",
    )
    serve.add_argument(
        "--draft-model",
        default=None,
        metavar="PATH",
        help="a smaller model with the same vocabulary (.gguf or Hugging Face folder) drafting tokens, beside "
        "the --speculative sources",
    )
    serve.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    from sdk.options import Speculative
    from sdk.server import serve  # imported on use, so `stencil --help` does not load the server stack

    limit = {} if args.max_concurrent_requests is None else {"max_concurrent_requests": args.max_concurrent_requests}
    speculative: Speculative | str | None = args.speculative
    if args.draft_model is not None:
        speculative = Speculative(
            draft_model=args.draft_model,
            jump_forward=args.speculative == "auto",
            prompt_lookup=args.speculative is not None,
        )
    serve(
        args.model,
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        served_model_name=args.served_model_name,
        dtype=args.dtype,
        speculative=speculative,
        **limit,
    )
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
