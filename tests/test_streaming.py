"""inferd/streaming.py's TokenFrames: what an SSE client reads of a generation's pieces.
(The writer itself, send_sse, is exercised by the chat and completion route tests.)"""

from __future__ import annotations

import random
import re

import pytest

from inferd.backends.base import GenerationStats, TokenEvent
from inferd.streaming import TokenFrames
from inferd.testing.sse import parse_sse


def _read(pieces: list[str], per_write: int = 1) -> str:
    """The text a client reads when `pieces` are written `per_write` at a time."""
    frames = TokenFrames()
    events = [TokenEvent(text=piece) for piece in pieces]
    body = "".join(
        frames.events(events[start : start + per_write])
        for start in range(0, len(events), per_write)
    )
    return parse_sse(body).text


def _as_sse_reads(text: str) -> str:
    """SSE carries no CR: CRLF and a lone CR each read as one LF."""
    return re.sub(r"\r\n|\r", "\n", text)


@pytest.mark.parametrize("per_write", [1, 3])
def test_a_crlf_split_between_pieces_reads_as_one_line_end(per_write):
    assert _read(["line\r", "\nnext"], per_write) == "line\nnext"
    assert _read(["a\r", "\n", "b"], per_write) == "a\nb"  # the LF alone is not sent at all
    assert _read(["a\r", "\r\n", "b"], per_write) == "a\n\nb"  # two line ends stay two


def test_line_ends_that_are_not_a_split_crlf_are_kept():
    assert _read(["a\n", "\nb"]) == "a\n\nb"
    assert _read(["a\r", "b\n", "\nc"]) == "a\nb\n\nc"
    assert _read(["a\r\n", "\nb"]) == "a\n\nb"


def test_any_pieces_read_as_their_text_with_sse_line_ends():
    generator = random.Random(7)
    for _ in range(500):
        pieces = [
            "".join(generator.choice("ab \r\n") for _ in range(generator.randint(1, 4)))
            for _ in range(generator.randint(1, 8))
        ]
        per_write = generator.randint(1, 4)
        assert _read(pieces, per_write) == _as_sse_reads("".join(pieces)), pieces


def test_an_error_is_a_named_event_and_usage_a_closing_comment():
    frames = TokenFrames(usage=True)
    body = frames.events([TokenEvent(text="ok"), TokenEvent(error="boom")])
    body += frames.closing(GenerationStats(prompt_tokens=2, generated_tokens=1))
    stream = parse_sse(body)
    assert stream.text == "ok"
    assert [event.data for event in stream.named("error")] == ["boom"]
    assert stream.comments[0].startswith("usage {")
