"""Types of the compiled extension built from _derivatives.cpp (see `byte_regex.CompiledTerms`)."""

from collections.abc import Callable, Sequence

import numpy as np

from grammars.core.byte_regex import Term

def untrack(*objects: object) -> None:
    """Take objects that can be in no reference cycle out of the collector's tracking."""

class Store:
    """A hash-consing table of byte-regex terms with their derivatives, by byte_regex's rules."""

    def carry(
        self,
        terms: tuple[Term, ...],
        term_of_node: dict[int, Term],
        generation_start: int,
        constants: tuple[Term, ...],
        /,
    ) -> list[int]: ...
    def remember(self, term_id: int, node: int, /) -> None: ...
    def describe(self, node: int, /) -> tuple[int, tuple[int, ...], bytes, int, int, int]: ...
    def state(self, node: int, books: tuple[object, ...], check: Callable[[], object] | None, /) -> int | None: ...
    def start(
        self,
        nodes: Sequence[int],
        tags: Sequence[int],
        books: tuple[object, ...],
        check: Callable[[], object] | None,
        /,
    ) -> int | None: ...
    def fill(
        self,
        states: list[int],
        trans: np.ndarray,
        has_row: np.ndarray,
        has_entry: np.ndarray,
        books: tuple[object, ...],
        check: Callable[[], object] | None,
        /,
    ) -> list[int] | None: ...
    def fill_entries(
        self,
        entries: list[int],
        trans: np.ndarray,
        has_row: np.ndarray,
        has_entry: np.ndarray,
        books: tuple[object, ...],
        check: Callable[[], object] | None,
        /,
    ) -> list[int] | None: ...
    def walk_filler(
        self,
        trans: np.ndarray,
        has_row: np.ndarray,
        has_entry: np.ndarray,
        books: tuple[object, ...],
        check: Callable[[], object] | None,
        /,
    ) -> object: ...
    def is_empty(self, node: int, check: Callable[[], object], /) -> bool | None: ...
    def clamp(self, node: int, limit: int, /) -> int: ...
    def accepting(self, node: int, /) -> tuple[bool, tuple[int, ...]]: ...
    def tag_free_form(self, node: int, /) -> tuple[tuple[int, ...], tuple[int, ...]] | None: ...
    def retag(self, node: int, tags: Sequence[int], new_tags: Sequence[int], /) -> int: ...
    def adopt(self, source: Store, nodes: Sequence[int], /) -> tuple[bytes, bytes]: ...
    def num_nodes(self) -> int: ...
