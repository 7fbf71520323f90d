"""Types of the compiled extension built from _walk_*.cpp (listed in _walk.h; see `grammars.masking.token_walk`)."""

from collections.abc import Callable

import numpy as np

def build_trie(data: np.ndarray, starts: np.ndarray, /) -> tuple[bytes, bytes, bytes, bytes, bytes, bytes]: ...
def walk_nodes(
    tables: Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    fill: Callable[[list[int], list[int]], object],
    filler: object,
    trie: tuple[np.ndarray, ...],
    nodes: np.ndarray,
    sid: int,
    /,
) -> tuple[bytes, list[tuple[int, int, bytes]]]: ...
def walk_vocabulary(
    tables: Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    fill: Callable[[list[int], list[int]], object],
    filler: object,
    trie: tuple[np.ndarray, ...],
    nodes: np.ndarray,
    sid: int,
    ordered_ids: np.ndarray,
    row_bits: np.ndarray,
    size: int,
    /,
) -> tuple[bytes, list[tuple[int, int, bytes]]]: ...
def new_group_walks(max_walks: int, max_bytes: int, /) -> object: ...
def group_walks_held(group_walks: object, /) -> tuple[int, int]: ...
def new_settler(
    group_walks: object,
    ordered_ids: np.ndarray,
    tables: Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    trie: tuple[np.ndarray, ...],
    /,
) -> object: ...
def settle(
    settler: object,
    inside_bits: np.ndarray,
    eos_ids: tuple[int, ...],
    may_end: bool,
    config: int,
    walk_name: tuple[int, int],
    groups: tuple[tuple[int, int, np.ndarray], ...],
    origins: tuple[int, ...],
    steps: tuple[
        Callable[[int], tuple[bool, tuple[int, ...]]],
        Callable[[int, int], int | None],
        Callable[[list[int]], int],
        Callable[[int], tuple[int, ...]],
        Callable[[int], int],
    ],
    fill: Callable[[list[int], list[int]], object],
    make_filler: Callable[[], object | None] | None,
    /,
) -> tuple[int, bytes]: ...
def bits_identity(bits: np.ndarray, /) -> tuple[int, bytes]: ...
def bool_mask(bits: np.ndarray | bytes, size: int, width: int = -1, /) -> bytearray: ...
def walked_suspects(
    mask: np.ndarray, inside_bits: np.ndarray, ids: np.ndarray, inside_too: np.ndarray, /
) -> list[int]: ...
