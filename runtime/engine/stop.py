"""Stop strings: find them in generated text, and hold back streamed text that might start one.

Stop strings are matched on text, not tokens, so one that spans token boundaries (or sits inside a
single token) is found all the same. While streaming, the tail of the text that could still grow into
a stop string is held back, so a client never sees text that is later cut.
"""

from __future__ import annotations


def find_stop_string(text: str, stop: tuple[str, ...], search_from: int) -> int | None:
    """Where the earliest stop string starts in `text`, looking at matches that end past `search_from`.

    Args:
        text: the completion text so far.
        stop: the stop strings.
        search_from: length of the text already checked; only matches that use newer text are new.

    Returns:
        The offset of the first stop string occurrence, or None.
    """
    found: int | None = None
    for stop_string in stop:
        offset = text.find(stop_string, max(0, search_from - len(stop_string) + 1))
        if offset >= 0 and (found is None or offset < found):
            found = offset
    return found


def num_held_back(text: str, stop: tuple[str, ...]) -> int:
    """Length of the longest tail of `text` that is a proper prefix of some stop string (0 if none)."""
    longest = 0
    for stop_string in stop:
        for length in range(min(len(stop_string) - 1, len(text)), longest, -1):
            if text.endswith(stop_string[:length]):
                longest = length
                break
    return longest
