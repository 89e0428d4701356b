"""Server-Sent Events framing: pure functions, no I/O.

A token is sent as one event. A token that contains newlines becomes several `data:`
lines of that one event, which SSE clients join back with "\\n" -- so a streamed answer
is byte-for-byte the non-streamed one (except that a carriage return arrives as "\\n").
"""

from __future__ import annotations

import re

KEEPALIVE = ": keepalive\n\n"
CONTENT_TYPE = "text/event-stream; charset=utf-8"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# SSE clients end a line at CRLF, LF or a lone CR: split on all three, or the text after
# a CR would be read as a field name and dropped (SSE cannot carry CR; it arrives as LF).
_LINE_END = re.compile(r"\r\n|\r|\n")


def data_lines(text: str) -> str:
    return "".join(f"data: {line}\n" for line in _LINE_END.split(text))


def token_event(text: str) -> str:
    """One token as an unnamed event (what API.md's clients read)."""
    return data_lines(text) + "\n"


def named_event(name: str, text: str) -> str:
    """A named event, e.g. `event: error` when a stream fails midway."""
    return f"event: {name}\n" + data_lines(text) + "\n"
