"""Types of the compiled extension built from _distinct_keys.cpp (see `grammars.core.distinct_keys.refusals`)."""

def classify(
    frames: tuple[frozenset[str] | None, ...],
    mode: int,
    key: bytes,
    is_escaped: bool,
    tokens: list[bytes],
    keys_may_run_out: bool,
    /,
) -> bytes: ...
