"""The connection protocol: Sanic's, plus limits for slow and for too many clients.

Sanic's own request timers are idle timers -- each byte received restarts them -- so a
client that trickles a byte every few seconds can hold a connection forever, and
nothing caps how many connections are open. GuardedProtocol (a subclass of the
WebSocketProtocol Sanic would use anyway, via ws_auth's) adds, from `[server]`:

- `header_timeout`: a request's headers must be in within this many seconds of its
  first byte (of the connection being opened, for its first request);
- `body_timeout`: its whole body within this many seconds of the same moment;
- past either, the client gets 408 and the connection is closed; a connection that
  sends nothing at all is closed silently after `header_timeout`;
- `max_connections`: one connection more is answered 503 and closed, unread.

Once a request's body is in, these limits are done with it: a long generation is
governed by `response_timeout`, a WebSocket by its pings.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from sanic.exceptions import RequestTimeout
from sanic.http import Stage

from inferd.ws_auth import KeyedWebSocketProtocol

_REFUSAL_BODY = json.dumps({"error": "too many open connections; retry shortly"}).encode()
TOO_MANY_CONNECTIONS = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"content-type: application/json\r\n"
    b"content-length: %d\r\n"
    b"retry-after: 1\r\n"
    b"x-content-type-options: nosniff\r\n"
    b"connection: close\r\n\r\n%b" % (len(_REFUSAL_BODY), _REFUSAL_BODY)
)
# How long a refused connection may stay to read its 503 before it is cut.
REFUSED_LINGER = 1.0


class GuardedProtocol(KeyedWebSocketProtocol):
    __slots__ = ("_began", "_heard", "_refused", "_timer")

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._began: float | None = None  # when the request being received began
        self._heard = False  # any byte since then
        self._timer: asyncio.TimerHandle | None = None
        self._refused = False

    # -- connection cap -------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if len(self.connections) >= self.app.ctx.config.server.max_connections:
            self._refuse(transport)
            return
        super().connection_made(transport)
        self._begin_request()

    def _refuse(self, transport: Any) -> None:
        """Answer 503 without reading the request, then hang up: an orderly close when
        the client reads it, an abort if it lingers. (`transport` is uvloop's or
        asyncio's: they share the methods but not a base class.)"""
        self._refused = True
        transport.write(TOO_MANY_CONNECTIONS)
        if transport.can_write_eof():
            transport.write_eof()
        self._timer = self.loop.call_later(REFUSED_LINGER, transport.abort)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # never read: the request is refused whatever it says
        if self.websocket is None:
            self._heard = True
            if self._began is None and self._stage() is Stage.IDLE:
                self._begin_request()
        super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        if not self._refused:
            super().connection_lost(exc)

    def close(self, timeout: float | None = None) -> None:
        self._cancel_timer()
        super().close(timeout)

    # -- request deadlines ----------------------------------------------------
    def _stage(self) -> Stage:
        return self.http.stage if self.http is not None else Stage.IDLE

    def _begin_request(self) -> None:
        self._began = time.monotonic()
        self._heard = False
        self._schedule(self.app.ctx.config.server.header_timeout)

    def _schedule(self, delay: float) -> None:
        self._cancel_timer()
        self._timer = self.loop.call_later(max(delay, 0.0), self._check_deadlines, self._began)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check_deadlines(self, began: float) -> None:
        if began != self._began or self.websocket is not None:
            return  # a later request has its own timer; a WebSocket has pings
        server = self.app.ctx.config.server
        elapsed = time.monotonic() - began
        stage = self._stage()
        if stage is Stage.IDLE:
            if self._heard:  # that request is over; the next one starts its own clock
                self._began = None
            elif elapsed >= server.header_timeout:
                self._cut(None)  # silent since it connected
            else:
                self._schedule(server.header_timeout - elapsed)
        elif stage is Stage.REQUEST:
            if elapsed >= server.header_timeout:
                self._cut(RequestTimeout("request headers not received in time"))
            else:
                self._schedule(server.header_timeout - elapsed)
        elif self._receiving_body():
            if elapsed >= server.body_timeout:
                self._cut(RequestTimeout("request body not received in time"))
            else:
                self._schedule(server.body_timeout - elapsed)
        else:
            self._began = None  # received in full: the handler's time is not ours to bound

    def _receiving_body(self) -> bool:
        http = self.http
        return (
            http is not None
            and http.stage is Stage.HANDLER
            and bool(http.request_body)
            and not http.upgrade_websocket
        )

    def _cut(self, error: RequestTimeout | None) -> None:
        """End the request the way Sanic's own timers do: its task is cancelled and,
        with an error set, the client is answered with it before the connection closes."""
        if error is not None and self.http is not None:
            self.http.exception = error
            # Sanic reads what is left of a body before it closes the connection; from a
            # client this slow, it must not.
            self.http.request_body = None
        if self._task is not None:
            self._task.cancel()
