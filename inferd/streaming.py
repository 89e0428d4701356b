"""Sending a generation as Server-Sent Events (used by /completions and /chat/completions)."""

from __future__ import annotations

from collections.abc import Callable

from sanic import Request

from inferd import sse
from inferd.engine import Stream
from inferd.generation import with_keepalive


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
    response = await request.respond(
        content_type=sse.CONTENT_TYPE, headers={**sse.HEADERS, **(headers or {})}
    )
    interval = request.app.ctx.config.server.keepalive_interval
    try:
        async for event in with_keepalive(stream, interval):
            if event is None:
                await response.send(sse.KEEPALIVE)
            elif event.error is not None:
                await response.send(sse.named_event("error", event.error))
            elif event.text:
                if on_text:
                    on_text(event.text)
                await response.send(sse.token_event(event.text))
        await response.eof()
    finally:
        stream.cancel()
