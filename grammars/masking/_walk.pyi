"""Types of the compiled extension built from _walk_*.cpp (listed in _walk.h; see `grammars.masking.token_walk`)."""

from collections.abc import Callable

import numpy as np

def build_trie(
    data: np.ndarray, starts: np.ndarray, /
) -> tuple[bytearray, bytearray, bytearray, bytearray, bytearray, bytearray]: ...
def walk_nodes(
    tables: Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray]],
    fill_rows: Callable[[list[int]], object],
    trie: tuple[np.ndarray, ...],
    nodes: np.ndarray,
    sid: int,
    /,
) -> tuple[bytearray, list[tuple[int, int, bytearray]]]: ...
def walk_vocabulary(
    tables: Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray]],
    fill_rows: Callable[[list[int]], object],
    trie: tuple[np.ndarray, ...],
    nodes: np.ndarray,
    sid: int,
    ordered_ids: np.ndarray,
    row_bits: np.ndarray,
    size: int,
    /,
) -> tuple[bytearray, list[tuple[int, int, bytearray]]]: ...
def new_group_walks(max_walks: int, max_bytes: int, /) -> object: ...
def new_parser_edges() -> object: ...
def group_walks_held(group_walks: object, /) -> tuple[int, int]: ...
def settle(
    group_walks: object,
    parser_edges: object,
    bits: np.ndarray,
    ordered_ids: np.ndarray,
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
    tables: Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray]],
    fill_rows: Callable[[list[int]], object],
    trie: tuple[np.ndarray, ...],
    /,
) -> None: ...
def bits_identity(bits: np.ndarray, /) -> tuple[int, bytes]: ...
def bool_mask(bits: np.ndarray | bytes, size: int, width: int = -1, /) -> bytearray: ...
def allowed_among(mask: np.ndarray, ids: np.ndarray, /) -> list[int]: ...
