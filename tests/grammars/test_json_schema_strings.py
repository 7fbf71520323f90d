"""JSON string contents: every encoding of a character, counted lengths, patterns over decoded text."""

import pytest

from grammars.core import byte_regex as rx
from grammars.core.charset import CharSet
from grammars.frontends.json_schema import strings


def _matches(term, content: str) -> bool:
    return rx.matches(term, content.encode("utf-8"))


@pytest.mark.parametrize("content", ["A", "\\u0041", "\\u0041"])
def test_escaped_characters_match_patterns_by_their_decoded_value(content):
    assert _matches(strings.pattern_term("^A$"), content)


def test_every_encoding_of_a_character_is_accepted_and_nothing_else():
    term = strings.encode_chars(CharSet.of("é"))
    assert all(_matches(term, c) for c in ("é", "\\u00e9", "\\u00E9", "\\u00e9".upper().replace("\\U", "\\u")))
    assert not _matches(term, "e")
    smiley = strings.encode_chars(CharSet.of("😀"))
    assert _matches(smiley, "😀") and _matches(smiley, "\\ud83d\\ude00") and _matches(smiley, "\\uD83D\\uDE00")
    assert not _matches(smiley, "\\ud83d")


def test_raw_control_characters_quotes_and_backslashes_are_never_accepted():
    for bad in ("\x01", '"', "\\", "\\x41", "\\ud800"):
        assert not _matches(strings.ANY_CONTENT, bad), bad
    for good in ("\\n", "\\/", '\\"', "\\\\", "\\u0000", "tab\\t"):
        assert _matches(strings.ANY_CONTENT, good), good


def test_lengths_count_code_points_and_stay_counters():
    term = strings.length_term(2, 3)
    assert _matches(term, "ab") and _matches(term, "a\\nb") and _matches(term, "\\ud83d\\ude00x")
    assert not _matches(term, "a") and not _matches(term, "abcd")
    huge = strings.length_term(0, 100_000)
    assert huge.kind == rx.K_REPEAT and huge.hi == 100_000


def test_other_than_excludes_every_spelling_of_the_names_and_is_plain():
    term = strings.other_than(frozenset({"a", "ab", "é"}))
    assert term.is_plain
    for excluded in ("a", "\\u0061", "ab", "\\u0061b", "é", "\\u00e9"):
        assert not _matches(term, excluded), excluded
    for kept in ("", "abc", "b", "ée", "\\u00e8"):
        assert _matches(term, kept), kept


def test_unenforceable_patterns_raise_a_typed_reason():
    with pytest.raises(strings.UnsupportedPattern, match="cannot be enforced"):
        strings.pattern_term("(?<=a)b")


def test_value_encodings_refuse_lone_surrogates():
    with pytest.raises(ValueError, match="surrogate"):
        strings.value_encodings("\ud800")


def test_content_emptiness_is_decided_on_one_encoding_per_string():
    word_digit_pairs = strings.pattern_term("^(\\w\\d)+$")
    assert strings.content_is_empty(rx.intersect(word_digit_pairs, strings.pattern_term("a5b"))) is False
    assert strings.content_is_empty(rx.intersect(word_digit_pairs, strings.pattern_term("ab"))) is True
    # Every spelling of "a5" ("\\u0061" included) is a declared name: nothing else matches ^a5$.
    only_a5 = rx.intersect(strings.pattern_term("^a5$"), strings.other_than(frozenset({"a5"})))
    assert strings.content_is_empty(only_a5) is True
