"""Server-Sent Events framing: pure functions, no I/O.

A token is sent as one event. A token that contains newlines becomes several `data:`
lines of that one event, which SSE clients join back with "\\n" -- so a streamed answer
is byte-for-byte the non-streamed one.
"""

from __future__ import annotations

KEEPALIVE = ": keepalive\n\n"
CONTENT_TYPE = "text/event-stream; charset=utf-8"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def data_lines(text: str) -> str:
    return "".join(f"data: {line}\n" for line in text.split("\n"))


def token_event(text: str) -> str:
    """One token as an unnamed event (what API.md's clients read)."""
    return data_lines(text) + "\n"


def named_event(name: str, text: str) -> str:
    """A named event, e.g. `event: error` when a stream fails midway."""
    return f"event: {name}\n" + data_lines(text) + "\n"
