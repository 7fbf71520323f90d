"""Session-wide test settings."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def isolated_grammar_cache(tmp_path_factory):
    """Compiled grammars go to a fresh directory, so tests neither read nor leave a user's cache."""
    patch = pytest.MonkeyPatch()
    patch.setenv("STENCIL_CACHE_DIR", str(tmp_path_factory.mktemp("stencil-cache")))
    yield
    patch.undo()
