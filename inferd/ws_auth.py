"""A browser's way to send its API key with the /chat/ws handshake: a subprotocol.

`new WebSocket(url)` cannot set an Authorization header, but it can offer subprotocols,
which travel in the handshake's `Sec-WebSocket-Protocol` header (as Kubernetes takes a
bearer token). A client offers two:

    new WebSocket(url, ["inferd.bearer", "inferd.key." + base64url(key)])

The auth plugin reads the key from the second; the server selects the first, so the key
is never echoed back (and a browser requires the server to select one it offered):
KeyedWebSocketProtocol, the connection protocol of `inferd serve` (protocol.py) and of
`inferd.testing.live_server`, does the selecting. The
key is base64url without padding, since a subprotocol must be an HTTP token. A query
parameter was not chosen: proxies and servers log URLs, not this header.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

from sanic.request import Request
from sanic.server.protocols.websocket_protocol import WebSocketProtocol
from sanic.server.websockets.impl import WebsocketImplProtocol

BEARER = "inferd.bearer"
KEY_PREFIX = "inferd.key."


def offered(request: Request) -> list[str]:
    """The subprotocols a WebSocket handshake offers, in order."""
    values = request.headers.getall("sec-websocket-protocol", [])
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


def is_handshake(request: Request) -> bool:
    return request.headers.get("upgrade", "").lower() == "websocket"


def key_from(request: Request) -> str | None:
    """The API key a handshake offers as `inferd.key.<base64url>`; None without one,
    "" when it does not decode (so it is refused as an invalid key)."""
    if not is_handshake(request):
        return None
    for name in offered(request):
        if name.startswith(KEY_PREFIX):
            encoded = name.removeprefix(KEY_PREFIX)
            try:
                return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
            except (binascii.Error, ValueError):
                return ""
    return None


def _selectable(request: Request, configured: Sequence[str] | None) -> list[str] | None:
    """What the handshake may select: the route's own subprotocols, plus BEARER when the
    client offers it (only then: a server that offers one refuses clients offering none)."""
    if BEARER not in offered(request):
        return None if configured is None else list(configured)
    return [*(configured or ()), BEARER]


class KeyedWebSocketProtocol(WebSocketProtocol):
    """Sanic's WebSocket protocol, selecting BEARER in a handshake that offers it (Sanic
    takes a route's subprotocols as fixed, for every client alike)."""

    __slots__ = ()

    async def websocket_handshake(
        self, request: Request, subprotocols: Sequence[str] | None = None
    ) -> WebsocketImplProtocol:
        return await super().websocket_handshake(request, _selectable(request, subprotocols))
