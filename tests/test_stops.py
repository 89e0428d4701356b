"""Tests for inferd/stops.py: stop sequences found across streamed text deltas."""

from __future__ import annotations

import pytest

from inferd.stops import StopMatcher


def run(stops: list[str], pieces: list[str]) -> tuple[list[str], bool, str]:
    """Push pieces until a stop is hit; return (emitted pieces, hit, flushed text)."""
    matcher = StopMatcher(stops)
    emitted = []
    for piece in pieces:
        text, hit = matcher.push(piece)
        emitted.append(text)
        if hit:
            return emitted, True, matcher.flush()
    return emitted, False, matcher.flush()


def test_no_stops_passes_everything_through_without_holding_back():
    emitted, hit, rest = run([], ["Hello", " wor", "ld"])
    assert emitted == ["Hello", " wor", "ld"]
    assert not hit
    assert rest == ""


def test_empty_stop_strings_are_ignored():
    emitted, hit, _ = run(["", ""], ["abc", "def"])
    assert emitted == ["abc", "def"]
    assert not hit


def test_stop_inside_one_piece_emits_only_the_text_before_it():
    emitted, hit, rest = run(["\n\n"], ["one\n\ntwo"])
    assert emitted == ["one"]
    assert hit
    assert rest == ""


def test_stop_spanning_many_pieces():
    emitted, hit, _ = run(["<|end|>"], ["Hi", " there<", "|", "en", "d|", ">more"])
    assert "".join(emitted) == "Hi there"
    assert hit


def test_holds_back_only_a_possible_stop_prefix():
    matcher = StopMatcher(["STOP"])
    assert matcher.push("abcST") == ("abc", False)
    # "STx" can no longer start "STOP": all of it is released.
    assert matcher.push("x") == ("STx", False)
    assert matcher.push("S") == ("", False)
    assert matcher.push("TO") == ("", False)
    assert matcher.push("P!") == ("", True)


def test_holds_back_the_longest_suffix_over_several_stops():
    matcher = StopMatcher(["abcd", "cde"])
    # "abc" could start "abcd", "c" could start "cde": hold back the longer, "abc".
    assert matcher.push("xxabc") == ("xx", False)
    assert matcher.push("z") == ("abcz", False)


def test_false_start_then_real_stop():
    emitted, hit, _ = run(["ab"], ["a", "a", "a", "b", "c"])
    assert "".join(emitted) == "aa"
    assert hit


def test_earliest_stop_wins():
    emitted, hit, _ = run(["world", "o"], ["hello world"])
    assert emitted == ["hell"]
    assert hit


def test_flush_releases_held_text_at_the_natural_end():
    emitted, hit, rest = run(["</s>"], ["The end.</"])
    assert emitted == ["The end."]
    assert not hit
    assert rest == "</"


def test_nothing_is_emitted_after_a_stop():
    matcher = StopMatcher(["."])
    assert matcher.push("a.b") == ("a", True)
    assert matcher.stopped
    assert matcher.push("more") == ("", True)
    assert matcher.flush() == ""


@pytest.mark.parametrize("cut", range(1, 12))
def test_result_does_not_depend_on_how_the_text_is_split(cut):
    text = "Q: hi\nA: hello\nQ: bye"
    pieces = [text[i : i + cut] for i in range(0, len(text), cut)]
    emitted, hit, _ = run(["\nQ:"], pieces)
    assert "".join(emitted) == "Q: hi\nA: hello"
    assert hit
