"""Backends: where a call's messages become tokens (the local engine, a remote server, or a script for tests)."""

from sdk.backends.base import Backend, BackendRequest, Scores
from sdk.backends.local import LocalBackend
from sdk.backends.remote import RemoteBackend, RemoteError
from sdk.backends.scripted import Scripted, ScriptedBackend

__all__ = [
    "Backend",
    "BackendRequest",
    "LocalBackend",
    "RemoteBackend",
    "RemoteError",
    "Scripted",
    "ScriptedBackend",
    "Scores",
]
