"""Sending a generation as Server-Sent Events (used by /completions and /chat/completions)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable

from sanic import Request

from inferd import sse
from inferd.backends.base import TokenEvent
from inferd.stream import Stream


def send_immediately(request: Request) -> None:
    """Turn off Nagle's algorithm on this connection.

    A stream writes many small pieces; with Nagle on, the first piece after the headers
    waits for the client's delayed ACK (40 ms on Linux) before it leaves.
    """
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def send_sse(
    request: Request,
    stream: Stream,
    headers: dict[str, str] | None = None,
    on_text: Callable[[str], None] | None = None,
) -> None:
    """Stream tokens as `data:` events; a failure midway ends with `event: error`.

    The generation is cancelled in `finally`: when the client disconnects, Sanic cancels
    this handler at its next await, and the engine drops the request before its next step.
    """
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
        async for first in with_keepalive(stream, interval):
            if first is None:
                await response.send(sse.KEEPALIVE)
                continue
            # Tokens that arrived while the last write was in flight go out in one write.
            chunk = []
            for event in (first, *stream.ready_events()):
                if event.error is not None:
                    chunk.append(sse.named_event("error", event.error))
                elif event.text:
                    if on_text:
                        on_text(event.text)
                    chunk.append(sse.token_event(event.text))
            if chunk:
                await response.send("".join(chunk))
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
