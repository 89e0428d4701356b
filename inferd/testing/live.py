"""A real Sanic server on an ephemeral port, for streaming, disconnect and WebSocket tests.

sanic-testing's clients buffer whole responses; these tests need a real socket.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sanic import Sanic

from inferd.ws_auth import KeyedWebSocketProtocol


@asynccontextmanager
async def live_server(app: Sanic) -> AsyncIterator[str]:
    """Serve `app` on 127.0.0.1 (random port) and yield its base URL, e.g. http://127.0.0.1:PORT."""
    # TouchUp rewrites Sanic's protocol classes in place, once per process: a second app
    # in the same test process would fail it, and it only shaves microseconds.
    app.config.TOUCHUP = False
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # Sanic treats port=0 as "default port", so bind ourselves
    port = sock.getsockname()[1]
    server = await app.create_server(
        sock=sock, return_asyncio_server=True, access_log=False, protocol=KeyedWebSocketProtocol
    )
    assert server is not None
    await server.startup()
    await server.before_start()
    await server.after_start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await server.before_stop()
        await server.close()
        await server.after_stop()
