"""Sending a generation as Server-Sent Events: the writer (keepalives, coalesced writes,
cancellation) is shared; SseFrames says what the events look like on the wire."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Protocol

from sanic import Request

from inferd import sse
from inferd.backends.base import GenerationStats, TokenEvent
from inferd.stream import Stream


def send_immediately(request: Request) -> None:
    """Turn off Nagle's algorithm on this connection.

    A stream writes many small pieces; with Nagle on, the first piece after the headers
    waits for the client's delayed ACK (40 ms on Linux) before it leaves.
    """
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class SseFrames(Protocol):
    """How a stream's events become SSE text: API.md's token events, or OpenAI's chunks."""

    def opening(self) -> str:
        """Sent right after the headers ("" for nothing)."""
        ...

    def events(self, events: Sequence[TokenEvent]) -> str:
        """Events that arrived together, as one write ("" for nothing)."""
        ...

    def closing(self, stats: GenerationStats) -> str:
        """Sent once the generation has ended ("" for nothing)."""
        ...


class TokenFrames:
    """API.md's stream: one `data:` event per piece of text, `event: error` on failure;
    with `usage` (the client sent `X-Include-Usage: true`), a closing `: usage {...}`
    comment with the server's token counts and timings (SSE clients ignore comments).

    SSE cannot carry a carriage return: CR, LF and CRLF all end a `data:` line, and the
    client reads one LF (inferd/sse.py). A CRLF split between two pieces would read as
    two, so a piece's leading LF is dropped when the piece before it ended in CR."""

    def __init__(self, usage: bool = False) -> None:
        self.usage = usage
        self._after_cr = False

    def opening(self) -> str:
        return ""

    def events(self, events: Sequence[TokenEvent]) -> str:
        chunk = []
        for event in events:
            if event.error is not None:
                chunk.append(sse.named_event("error", event.error))
            elif event.text:
                text = event.text[1:] if self._after_cr and event.text[0] == "\n" else event.text
                self._after_cr = event.text[-1] == "\r"
                if text:
                    chunk.append(sse.token_event(text))
        return "".join(chunk)

    def closing(self, stats: GenerationStats) -> str:
        return sse.usage_comment(stats) if self.usage else ""


def wants_usage(request: Request) -> bool:
    return request.headers.get(sse.USAGE_HEADER, "").lower() == "true"


async def send_sse(
    request: Request,
    stream: Stream,
    headers: dict[str, str] | None = None,
    on_text: Callable[[str], None] | None = None,
    frames: SseFrames | None = None,
    on_end: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Stream the events as SSE (API.md's token events unless `frames` says otherwise).

    `on_end` runs once the generation has ended, before the stream's end goes out: a chat
    turn is stored there, so it is in the history by the time the client can ask again.

    The generation is cancelled in `finally`: when the client disconnects, Sanic cancels
    this handler at its next await, and the engine drops the request before its next step.
    """
    frames = frames or TokenFrames(usage=wants_usage(request))
    send_immediately(request)
    response = await request.respond(
        content_type=sse.CONTENT_TYPE, headers={**sse.HEADERS, **(headers or {})}
    )
    if response.status != 200:  # a plugin's on_response replaced it with an error
        stream.cancel()
        await response.send(response.body, end_stream=True)
        return
    interval = request.app.ctx.config.server.keepalive_interval
    try:
        if opening := frames.opening():
            await response.send(opening)
        async for first in with_keepalive(stream, interval):
            if first is None:
                await response.send(sse.KEEPALIVE)
                continue
            # Tokens that arrived while the last write was in flight go out in one write.
            events = [first, *stream.ready_events()]
            if on_text:
                for event in events:
                    if event.text and event.error is None:
                        on_text(event.text)
            if chunk := frames.events(events):
                await response.send(chunk)
        if on_end is not None:
            await on_end()
        if closing := frames.closing(stream.stats):
            await response.send(closing)
        await response.eof()
    finally:
        stream.cancel()


async def with_keepalive(stream: Stream, interval: float) -> AsyncIterator[TokenEvent | None]:
    """The stream's events, with None whenever `interval` seconds pass without one.

    The pending read is kept across timeouts rather than cancelled, so no event is lost.
    """
    pending: asyncio.Task[TokenEvent] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(stream.next_event())
            done, _ = await asyncio.wait({pending}, timeout=interval)
            if not done:
                yield None
                continue
            event = pending.result()
            pending = None
            yield event
            if stream.finished:  # the consumer may also have drained the final event
                return
    finally:
        if pending is not None:
            pending.cancel()
