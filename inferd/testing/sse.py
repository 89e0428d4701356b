"""A spec-following Server-Sent Events parser, so tests check what a real client sees.

It follows the WHATWG event-stream rules: lines end in CRLF, LF or CR; one leading space
after the colon is dropped; the `data:` lines of one event join with "\\n"; a line that
starts with ":" is a comment. `SseDecoder` reads a stream chunk by chunk as it arrives
(a chunk may end anywhere, even between a CR and its LF; the benchmarks time tokens
with it); `parse_sse` reads a whole body.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass(slots=True)
class SseEvent:
    name: str = "message"
    data_lines: list[str] = field(default_factory=list)

    @property
    def data(self) -> str:
        return "\n".join(self.data_lines)


@dataclass(slots=True)
class SseStream:
    events: list[SseEvent]
    comments: list[str]

    @property
    def text(self) -> str:
        """The concatenated data of the unnamed (token) events."""
        return "".join(event.data for event in self.events if event.name == "message")

    def named(self, name: str) -> list[SseEvent]:
        return [event for event in self.events if event.name == name]


class SseDecoder:
    """Feed text as it arrives; get back the events (and comments) it completes."""

    def __init__(self) -> None:
        self._pending = ""  # the start of a line whose end has not arrived yet
        self._after_cr = False  # the last chunk ended in CR: a LF opening the next ends no line
        self._current = SseEvent()
        self.comments: list[str] = []

    def feed(self, text: str) -> list[SseEvent]:
        if self._after_cr and text.startswith("\n"):
            text = text[1:]
        if text:
            self._after_cr = text.endswith("\r")
        lines = _LINE_END.split(self._pending + text)
        self._pending = lines.pop()  # after the last line end: an unfinished line
        return [event for line in lines if (event := self._line(line)) is not None]

    def close(self) -> list[SseEvent]:
        """The body ended: what is left is its last line (an empty one ends the event)."""
        last, self._pending = self._pending, ""
        event = self._line(last)
        return [event] if event is not None else []

    def _line(self, line: str) -> SseEvent | None:
        if line == "":
            finished, self._current = self._current, SseEvent()
            return finished if finished.data_lines else None
        if line.startswith(":"):
            self.comments.append(line[1:].strip())
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._current.data_lines.append(value)
        elif name == "event":
            self._current.name = value
        return None


def parse_sse(body: str) -> SseStream:
    """Every event of a whole body; one that the body ends without a blank line after
    it is kept if its last line ended, dropped if the body stops mid-line."""
    decoder = SseDecoder()
    events = decoder.feed(body) + decoder.close()
    return SseStream(events, decoder.comments)
