"""Builds Stencil's compiled extensions; the rest of the package's metadata is in pyproject.toml.

`EXTENSIONS` lists every compiled module. They are compiled for the machine that installs the package
(`-march=native`: the install builds on the target), with torch's headers from the pinned torch of
`[build-system]`. Without a C++ compiler the build stops with a message that says so.
"""

from __future__ import annotations

import os
import shutil
import sys

from setuptools import Extension, setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

NATIVE_FLAGS = ["-O3", "-march=native", "-fopenmp", "-std=c++17"]

EXTENSIONS = [
    CppExtension(
        "runtime.model.kernels._quantized_linear",
        ["runtime/model/kernels/quantized_linear.cpp"],
        extra_compile_args=NATIVE_FLAGS,
        extra_link_args=["-fopenmp"],
    ),
    CppExtension(
        "runtime.model.kernels._paged_attention",
        ["runtime/model/kernels/paged_attention.cpp"],
        extra_compile_args=NATIVE_FLAGS,
        extra_link_args=["-fopenmp"],
    ),
    CppExtension(
        "runtime.model.kernels._elementwise",
        ["runtime/model/kernels/elementwise.cpp"],
        extra_compile_args=[*NATIVE_FLAGS, "-ffp-contract=off"],  # round each product as torch's ops do
        extra_link_args=["-fopenmp"],
    ),
    # The vocabulary walk of token masks: plain CPython API, no torch, so `grammars` imports without it.
    # One translation unit per concept (see _walk.h); `depends` rebuilds them all when the header changes.
    Extension(
        "grammars.masking._walk",
        [f"grammars/masking/_walk_{unit}.cpp" for unit in ("trie", "nodes", "settle", "masks", "module")],
        depends=["grammars/masking/_walk.h", "grammars/core/_lexer_filler.h"],
        extra_compile_args=["-O3", "-std=c++17"],
    ),
    # Derivatives of lexer terms (rows of the lazy lexer DFA): plain CPython API as well.
    Extension(
        "grammars.core._derivatives",
        ["grammars/core/_derivatives.cpp"],
        depends=["grammars/core/_lexer_filler.h"],
        extra_compile_args=["-O3", "-std=c++17"],
    ),
    # The parser's configurations (advance, join, stack expansion): plain CPython API as well.
    Extension("grammars.core._parser", ["grammars/core/_parser.cpp"], extra_compile_args=["-O3", "-std=c++17"]),
    # The token classifier of keyed masks (`distinct_keys.refusals`): plain CPython API as well.
    Extension(
        "grammars.core._distinct_keys", ["grammars/core/_distinct_keys.cpp"], extra_compile_args=["-O3", "-std=c++17"]
    ),
]


def require_compiler() -> None:
    """Stop with a clear message when no C++ compiler is on PATH (setuptools' own error names a file)."""
    compiler = os.environ.get("CXX", "c++").split()[0]
    if shutil.which(compiler) is None:
        sys.exit(
            f"error: Stencil compiles its CPU kernels at install time and found no C++ compiler ({compiler!r} is "
            "not on PATH). Install one (Debian/Ubuntu: apt-get install g++) or set CXX, then install again."
        )


if any(command.startswith(("build", "develop", "install", "editable_wheel", "bdist")) for command in sys.argv[1:]):
    require_compiler()

setup(ext_modules=EXTENSIONS, cmdclass={"build_ext": BuildExtension.with_options(use_ninja=False)})
