"""benchmarks/soak_clients.py: how a soak client judges a stored history against what
it sent and received."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from soak_clients import Expected, _compare

from inferd.backends.base import TokenEvent
from inferd.streaming import TokenFrames
from inferd.testing.sse import parse_sse

ANSWER = "first line\r\nsecond\rthird\n"  # a model may emit CR; history keeps it


def _received_over_sse(text: str) -> str:
    """What a client reads of `text` streamed two characters a piece (CRLFs split too)."""
    pieces = [TokenEvent(text=text[i : i + 2]) for i in range(0, len(text), 2)]
    return parse_sse(TokenFrames().events(pieces)).text


def _history(answer: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": "hi"}, {"role": "assistant", "content": answer}]


def test_an_sse_answer_matches_its_stored_text_with_carriage_returns():
    received = _received_over_sse(ANSWER)
    assert received != ANSWER  # SSE cannot carry a CR: it arrives as a line end
    expected = [Expected("user", "hi"), Expected("assistant", received, over_sse=True)]
    assert _compare(expected, _history(ANSWER)) is None


def test_a_cut_off_sse_answer_is_checked_as_a_prefix_of_the_stored_one():
    received = _received_over_sse("first line\r\nsec")
    expected = [
        Expected("user", "hi"),
        Expected("assistant", received, prefix_only=True, over_sse=True),
    ]
    assert _compare(expected, _history(ANSWER)) is None
    assert _compare(expected, _history("first line\r\nother")) == (
        [],
        ["message 1: cut-off answer does not start as received"],
    )


def test_a_websocket_answer_must_match_exactly():
    expected = [Expected("user", "hi"), Expected("assistant", ANSWER.replace("\r", "\n"))]
    assert _compare(expected, _history(ANSWER)) == (
        [],
        ["message 1: content differs from what was sent/received"],
    )
    assert (
        _compare([Expected("user", "hi"), Expected("assistant", ANSWER)], _history(ANSWER)) is None
    )


def test_a_changed_sse_answer_is_still_corrupted():
    expected = [Expected("user", "hi"), Expected("assistant", "first line\n", over_sse=True)]
    assert _compare(expected, _history("first line\r\nextra")) == (
        [],
        ["message 1: content differs from what was sent/received"],
    )


def test_missing_and_extra_messages_are_reported():
    expected = [Expected("user", "hi"), Expected("assistant", "a"), Expected("user", "more")]
    assert _compare(expected, _history("a")) == (["message 2 (user)"], [])
    assert _compare(expected[:1], _history("a")) == ([], ["1 unexpected extra messages"])
