"""`stencil serve`: an OpenAI-compatible HTTP server over one local engine (see docs/server.md)."""

from sdk.server.app import create_app, model_name, serve

__all__ = ["create_app", "model_name", "serve"]
