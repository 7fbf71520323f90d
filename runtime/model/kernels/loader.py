"""Imports a compiled extension of this package, or says why it cannot be used.

The extensions are built by `scripts/install.sh` (setup.py) for the installing machine. One that is
missing (a source tree never built, a build against another torch) leaves its callers on the torch
reference path, and the reason is what they log or raise.
"""

from __future__ import annotations

import importlib
from types import ModuleType


def load_extension(name: str) -> tuple[ModuleType | None, str | None]:
    """`runtime.model.kernels.<name>` and None, or None and why it did not load."""
    try:
        return importlib.import_module(f"runtime.model.kernels.{name}"), None
    except ImportError as exc:  # not built, or built against another torch
        return None, f"the compiled extension {name} did not load ({exc}); run scripts/install.sh to build it"
