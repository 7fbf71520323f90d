#!/usr/bin/env sh
# The benchmarks' llama.cpp peer: llama-cpp-python 0.3.36 built from source into .venv (minutes), its AMX
# path made to run on this machine kind. Built natively on a Xeon with AMX by gcc 12, ggml's AMX matmul stops
# with an illegal instruction, for two reasons fixed here in ggml-cpu/amx/mmq.cpp's ggml_tile_config_init:
#   - gcc 12's _tile_loadconfig declares an 8-byte read, so the stores filling the rest of the 64-byte tile
#     config are dropped and the tiles are left unconfigured: the config is loaded by `ldtilecfg` in asm;
#   - a per-thread "done" flag skipped reloading it, but in a process that also runs torch, oneDNN's AMX kernels
#     share those threads and release the tiles after each call: the config is loaded on every call.
# Without AMX (-mno-amx-*) llama.cpp decoded SmolLM2 at a third of this build's speed here.
set -eu
cd "$(dirname "$0")/.."
work=$(mktemp -d)
.venv/bin/pip download -q --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d "$work"
tar xzf "$work"/llama_cpp_python-0.3.36.tar.gz -C "$work"
source="$work/llama_cpp_python-0.3.36"
.venv/bin/python - "$source/vendor/llama.cpp/ggml/src/ggml-cpu/amx/mmq.cpp" <<'EOF'
import sys
path = sys.argv[1]
text = open(path).read()
for old, new in (
    ("    static thread_local bool done = false;\n\n    if (done) {\n        return;\n    }\n", ""),
    ("    _tile_loadconfig(&tc);\n    done = true;\n", '    asm volatile("ldtilecfg %0" :: "m"(tc));\n'),
):
    if old not in text:
        sys.exit(f"{path}: the code to patch has changed")
    text = text.replace(old, new)
open(path, "w").write(text)
EOF
.venv/bin/pip install -q --no-cache-dir --force-reinstall --no-deps "$source"
rm -rf "$work"
