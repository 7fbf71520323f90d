"""Model loading: GGUF files and Hugging Face folders into one `Checkpoint` shape."""

from runtime.loading.checkpoint import Checkpoint, expected_weight_names
from runtime.loading.default_model import DEFAULT_MODEL_INSTALL_COMMAND, default_model_path
from runtime.loading.loader import clear_checkpoint_cache, load_checkpoint

__all__ = [
    "DEFAULT_MODEL_INSTALL_COMMAND",
    "Checkpoint",
    "clear_checkpoint_cache",
    "default_model_path",
    "expected_weight_names",
    "load_checkpoint",
]
