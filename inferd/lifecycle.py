"""Graceful drain on SIGTERM/SIGINT, and closing everything on the way out.

Sanic does the connection side (GRACEFUL_SHUTDOWN_TIMEOUT, which create_app sets from
`[server] drain_timeout`): on a signal it stops the loop, runs the before-stop
listeners, stops accepting connections, closes the idle ones, waits up to that timeout
for the rest, aborts what is left -- their handlers are cancelled, so a chat turn stores
its partial answer just as on a disconnect -- and runs the after-stop listeners. On top
of that, an inference server needs:

- a drain (`begin_drain`): new requests get 503 with Retry-After and `Connection:
  close`, except the probes: /health stays 200 (a liveness probe must not kill a
  draining server) and /readiness says "draining", so a load balancer looks elsewhere;
  requests in flight close their connection when they end, so the drain does not wait
  out idle keep-alive connections; idle WebSockets are closed (1001 "going away"), busy
  ones once their answer ends;
- still listening while it drains (`finish_in_flight`): Sanic closes its listening
  socket only after the before-stop listeners, so the drain waits there for the
  generations in flight (up to drain_timeout) and new connections are still answered
  as above -- a probe on a fresh connection sees "draining", not "connection refused".
  Sanic's own wait then gets what is left of drain_timeout;
- a clean end (`shut_down`): wait for cancelled turns to store what they had and for
  the plugins' async hooks, close the session store (its pending writes finish first),
  and stop every model's owner thread, which closes its backend (MLX's close() included);
- a second signal during the drain exits at once (`exit_on_second_signal`).

server.py installs the drain and the clean end for a real server only: sanic-testing's
ASGI client runs the stop listeners after every request it sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
import weakref
from collections.abc import Iterator
from types import FrameType

from sanic import Request, Sanic
from sanic.response import HTTPResponse
from sanic.server.websockets.impl import WebsocketImplProtocol

from inferd.errors import error_response

log = logging.getLogger("inferd")
PROBES = frozenset({"/health", "/readiness"})  # answered while draining
# How long the after-stop steps may take: stored turns, store writes, owner threads.
CLOSE_TIMEOUT = 10.0
DRAIN_POLL = 0.05  # s between looks at the generations in flight during a drain


class Lifecycle:
    """Whether the server is draining, and what it must close on the way out."""

    def __init__(self) -> None:
        self.draining = False
        self._requests: weakref.WeakSet[Request] = weakref.WeakSet()
        self._idle_websockets: set[WebsocketImplProtocol] = set()

    # -- request side ------------------------------------------------------------
    async def on_request(self, request: Request) -> HTTPResponse | None:
        """Request middleware: refuse new work while draining."""
        if self.draining and request.path not in PROBES:
            _close_after_response(request)
            return error_response(
                503,
                "the server is shutting down; retry on another instance",
                {"Retry-After": "1"},
            )
        self._requests.add(request)
        return None

    @contextlib.contextmanager
    def idle_websocket(self, ws: WebsocketImplProtocol) -> Iterator[None]:
        """While a WebSocket waits for its next message: a drain closes it at once."""
        self._idle_websockets.add(ws)
        try:
            yield
        finally:
            self._idle_websockets.discard(ws)

    # -- shutdown ----------------------------------------------------------------
    async def begin_drain(self, app: Sanic) -> None:
        """before_server_stop: from now on, finish what is in flight and take nothing new."""
        self.draining = True
        in_flight = app.ctx.admission.in_flight
        log.info("draining: %d generations in flight, up to %g s", in_flight, _drain_timeout(app))
        for request in list(self._requests):
            _close_after_response(request)
        for ws in list(self._idle_websockets):
            await ws.close(1001, "server shutting down")

    async def finish_in_flight(self, app: Sanic) -> None:
        """before_server_stop, after begin_drain: wait (still listening) until no
        generation is in flight or drain_timeout has passed, then leave Sanic only the
        rest of that timeout to close the connections."""
        deadline = time.monotonic() + _drain_timeout(app)
        while app.ctx.admission.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(DRAIN_POLL)
        left = max(0.0, deadline - time.monotonic())
        app.config.GRACEFUL_SHUTDOWN_TIMEOUT = left
        log.info("drained: %d generations left, closing the listener", app.ctx.admission.in_flight)

    async def shut_down(self, app: Sanic) -> None:
        """after_server_stop: store what was answered, close the store, stop the models."""
        deadline = time.monotonic() + CLOSE_TIMEOUT
        # Aborted connections cancel their handlers now; each stores its partial turn.
        while app.ctx.admission.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0)  # let just-cancelled handlers hand their writes to the store
        try:  # async plugin hooks of the generations that ended during the drain
            await app.ctx.plugins.background.drain(max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            log.error("async plugin hooks still running at shutdown")
        await app.ctx.sessions.close(timeout=max(0.0, deadline - time.monotonic()))
        workers = app.ctx.registry.workers()
        for worker in workers:
            worker.stop()
        for worker in workers:
            remaining = max(0.0, deadline - time.monotonic())
            # The owner thread's last act is closing its backend (engine.py).
            if await asyncio.to_thread(worker.join, remaining):
                log.info("closed %s", worker.label)
            else:
                log.warning("%s did not stop within %g s", worker.label, CLOSE_TIMEOUT)
        log.info("stopped: session store closed, %d models stopped", len(workers))


def _drain_timeout(app: Sanic) -> float:
    return float(app.config.GRACEFUL_SHUTDOWN_TIMEOUT)


def _close_after_response(request: Request) -> None:
    """End the connection once this request's response is done (no keep-alive)."""
    if request.stream is not None:
        request.stream.keep_alive = False


def exit_on_second_signal() -> None:
    """During the drain, SIGTERM or SIGINT again ends the process at once.

    Committed session writes are safe (SQLite is transactional); what was in flight is
    lost, which is what a second signal asks for. Exit status 128 + signal number.
    """

    def exit_now(signum: int, frame: FrameType | None) -> None:
        log.warning("second signal (%s): exiting without finishing the drain", signum)
        os._exit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, exit_now)
