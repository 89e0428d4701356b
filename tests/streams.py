"""Test helpers for reading streams: a spec-following SSE parser and polling.

The parser follows the WHATWG event-stream rules (lines end in CRLF, LF or CR; one
leading space after the colon is dropped; `data:` lines of an event join with "\\n";
a line starting with ":" is a comment), so tests check what a real client would see.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

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


async def post_sse(base_url: str, path: str, body: dict) -> tuple[httpx.Response, SseStream]:
    """POST to a live server and read the whole SSE response."""
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        response = await client.post(path, json=body)
    return response, parse_sse(response.text)


async def wait_for(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    """Poll `condition` until it holds; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.01)
