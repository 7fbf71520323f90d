"""Where a sequence's text holds what a draft may copy or spell: the longest earlier match of its end
(prompt lookup), where a copied clause ends, and the tokens a forced text was spelled in before."""

from __future__ import annotations

import bisect

#: Longest context end, in bytes, that prompt lookup matches (longer matches say little more).
MAX_MATCH_BYTES = 256
#: Earlier occurrences of forced text's first bytes that `earlier_spelling` weighs, the latest first.
MAX_SPELLING_CANDIDATES = 32
#: Bytes that end a clause of copied text when white space follows them (`, `, `) `, `. `).
CLAUSE_END_BYTES = frozenset(b",;:)]}.!?")


def longest_earlier_match(text: bytes, max_bytes: int) -> tuple[int, int]:
    """The longest suffix of `text` (at most `max_bytes`) that also occurs ending earlier in it.

    Returns:
        (its length in bytes, where its latest earlier occurrence ends); (0, 0) when no byte recurs.
    """
    low, high, end = 0, min(max_bytes, len(text) - 1), 0
    while low < high:  # a suffix that recurs has every shorter suffix recurring too
        length = (low + high + 1) // 2
        start = text.rfind(text[-length:], 0, len(text) - 1)
        if start < 0:
            high = length - 1
        else:
            low, end = length, start + length
    return low, end


def ends_clause(text: bytes, start: int) -> bool:
    """Whether `text` ends a clause at byte `start`: a line break there, or a punctuation mark
    (`CLAUSE_END_BYTES`) followed by white space. A copy often ends there (`Verhoeven, switched`:
    the answer's name ends at the comma)."""
    if start >= len(text):
        return False
    byte = text[start]
    if byte in b"\r\n":
        return True
    return byte in CLAUSE_END_BYTES and start + 1 < len(text) and text[start + 1] in b" \t\r\n"


def is_punctuation(data: bytes) -> bool:
    """Whether `data` is ASCII punctuation only (`",`, `)`, `."`): what ends a copy, not what continues it."""
    return bool(data) and all(byte < 0x80 and not chr(byte).isalnum() and not chr(byte).isspace() for byte in data)


def earlier_spelling(text: bytes, ends: list[int], forced: bytes) -> tuple[int, int]:
    """Where `text` (its tokens ending at `ends`) spelled the longest prefix of `forced` before: among
    the latest `MAX_SPELLING_CANDIDATES` occurrences of its first two bytes that start a token, the one
    whose whole tokens cover the most of `forced` (the latest of equals).

    Returns:
        (the index of its first token, how many tokens cover the prefix); (0, 0) when none does.
    """
    probe = forced[:2]
    best_first, best_count, best_bytes = 0, 0, 0
    limit = len(text)
    for _ in range(MAX_SPELLING_CANDIDATES):
        start = text.rfind(probe, 0, limit)
        if start < 0:
            break
        limit = start + len(probe) - 1  # next: occurrences starting before this one
        first = bisect.bisect_right(ends, start)  # the token holding byte `start`
        if (ends[first - 1] if first else 0) != start:
            continue
        common = len(forced)
        if not text.startswith(forced, start):
            here = text[start : start + len(forced)]
            common = next((i for i, (a, b) in enumerate(zip(here, forced)) if a != b), len(here))
        count = bisect.bisect_right(ends, start + common, lo=first) - first  # tokens ending inside it
        covered = ends[first + count - 1] - start if count else 0
        if covered >= len(probe) and covered > best_bytes:  # a spelling of the probe's bytes at least
            best_first, best_count, best_bytes = first, count, covered
            if covered == len(forced):
                break
    return best_first, best_count
