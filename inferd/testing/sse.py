"""A spec-following Server-Sent Events parser, so tests check what a real client sees.

It follows the WHATWG event-stream rules: lines end in CRLF, LF or CR; one leading space
after the colon is dropped; the `data:` lines of one event join with "\\n"; a line that
starts with ":" is a comment.
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


def parse_sse(body: str) -> SseStream:
    events: list[SseEvent] = []
    comments: list[str] = []
    current = SseEvent()
    for line in _LINE_END.split(body):
        if line == "":
            if current.data_lines:
                events.append(current)
            current = SseEvent()
        elif line.startswith(":"):
            comments.append(line[1:].strip())
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                current.data_lines.append(value)
            elif name == "event":
                current.name = value
    return SseStream(events, comments)
