"""Server-Sent Events framing: pure functions, no I/O.

A token is sent as one event. A token that contains newlines becomes several `data:`
lines of that one event, which SSE clients join back with "\\n" -- so a streamed answer
is byte-for-byte the non-streamed one (except that a carriage return arrives as "\\n").
"""

from __future__ import annotations

import json
import re

from inferd.backends.base import GenerationStats

KEEPALIVE = ": keepalive\n\n"
CONTENT_TYPE = "text/event-stream; charset=utf-8"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
USAGE_HEADER = "X-Include-Usage"  # request header: "true" asks for usage_comment()
# SSE clients end a line at CRLF, LF or a lone CR: split on all three, or the text after
# a CR would be read as a field name and dropped (SSE cannot carry CR; it arrives as LF).
_LINE_END = re.compile(r"\r\n|\r|\n")


def as_received(text: str) -> str:
    """What an SSE client reads of `text` sent as token events: each line end as LF."""
    return _LINE_END.sub("\n", text)


def data_lines(text: str) -> str:
    return "".join(f"data: {line}\n" for line in _LINE_END.split(text))


def token_event(text: str) -> str:
    """One token as an unnamed event (what API.md's clients read)."""
    return data_lines(text) + "\n"


def named_event(name: str, text: str) -> str:
    """A named event, e.g. `event: error` when a stream fails midway."""
    return f"event: {name}\n" + data_lines(text) + "\n"


def usage_comment(stats: GenerationStats) -> str:
    """`: usage {...}`, the comment a stream ends with when the client sends
    `X-Include-Usage: true`: the server's own token counts and timings. SSE clients
    ignore comments, so only a client that asked looks for it."""
    first = stats.first_token_at
    usage = {
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.generated_tokens,
        "first_token_seconds": None if first is None else round(first - stats.queued_at, 6),
        "decode_seconds": (
            None
            if first is None or stats.finished_at is None
            else round(stats.finished_at - first, 6)
        ),
    }
    return f": usage {json.dumps(usage, separators=(',', ':'))}\n\n"
