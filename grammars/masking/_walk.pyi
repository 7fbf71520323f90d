"""Types of the compiled extension built from _walk.cpp (see `grammars.masking.token_walk`)."""

from collections.abc import Callable

import numpy as np

def advance_rows(
    tables: Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray]],
    fill_rows: Callable[[list[int]], object],
    data: np.ndarray,
    starts: np.ndarray,
    rows: np.ndarray,
    sid: int,
    offset: int,
    /,
) -> tuple[bytearray, list[tuple[int, int, bytearray]]]: ...
