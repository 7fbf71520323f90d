"""Backends: where a call's messages become tokens (the local engine; later, a remote server)."""

from sdk.backends.base import Backend, BackendRequest
from sdk.backends.local import LocalBackend
from sdk.backends.scripted import Scripted, ScriptedBackend

__all__ = ["Backend", "BackendRequest", "LocalBackend", "Scripted", "ScriptedBackend"]
