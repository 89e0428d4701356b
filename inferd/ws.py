"""WS /chat/ws: chat over a WebSocket.

Protocol: the client sends a JSON message with the chat fields; the server answers with
one text frame per token, then `__END__`; errors are `__ERROR__:<message>` frames and the
socket stays open for the next message. A socket that sends no `session-id` keeps one
session across its messages: the one named by the URL's `?session-id=` query parameter,
else a new one. Closing the socket cancels the generation in flight. When the server
drains (lifecycle.py), an idle socket is closed with 1001 at once, a busy one after
its answer ends.
"""

from __future__ import annotations

import logging
import re

from sanic import Request, Sanic
from sanic.server.websockets.impl import WebsocketImplProtocol
from websockets.exceptions import ConnectionClosed

from inferd import access_log
from inferd.apidoc import describe
from inferd.errors import BadRequest, describe_exception
from inferd.generation import ChatTurn, owner_of, start_chat
from inferd.parsed_request import from_chat
from inferd.requests import decode_json
from inferd.schemas import SESSION_ID_PATTERN, ChatRequest, parse_body

END = "__END__"
ERROR_PREFIX = "__ERROR__:"
log = logging.getLogger("inferd.ws")


async def _answer(
    request: Request, ws: WebsocketImplProtocol, raw: str | bytes, session_id: str
) -> ChatTurn:
    await request.app.ctx.plugins.on_websocket_message(request, raw)
    body = parse_body(ChatRequest, decode_json(raw, "message"))
    turn = await start_chat(request, from_chat(body, "websocket", session_id, owner_of(request)))
    try:
        failure = None
        async for event in turn.stream:
            if event.error is not None:
                failure = event.error
                break
            if event.text:
                turn.answer += event.text
                await ws.send(event.text)
        await turn.record()  # before the last frame: the client's next message sees this turn
        await ws.send(END if failure is None else f"{ERROR_PREFIX}generation failed: {failure}")
        return turn
    finally:
        turn.stream.cancel()
        await turn.record()


def _socket_session(request: Request) -> str:
    """The socket's session: `?session-id=` on the URL (so a client knows it), else a new one."""
    chosen = request.args.get("session-id")
    if chosen is None:
        return request.app.ctx.sessions.new_id()
    if not re.fullmatch(SESSION_ID_PATTERN, chosen):
        raise BadRequest(
            f"invalid 'session-id' query parameter {chosen!r}: use 1-128 of A-Z a-z 0-9 . _ : -"
        )
    return chosen


@describe(
    "Chat over a WebSocket",
    "chat",
    replies={101: None},
    media=(),
    query={"session-id": "the socket's session when a message names none"},
    errors=(400, 401, 426, 429, 500),
)
async def chat_ws(request: Request, ws: WebsocketImplProtocol) -> None:
    """Send JSON messages with POST /chat/completions' fields; receive one text frame per
    piece of text, then `__END__`; errors are `__ERROR__:<message>` frames."""
    try:
        session_id = _socket_session(request)
    except BadRequest as error:
        await ws.send(ERROR_PREFIX + error.message)
        await ws.close(code=1008, reason="invalid session-id")
        return
    lifecycle = request.app.ctx.lifecycle
    while not lifecycle.draining:
        with lifecycle.idle_websocket(ws):
            raw = await ws.recv()
        if raw is None:  # the client closed the socket (or the drain did)
            return
        try:
            turn = await _answer(request, ws, raw, session_id)
            access_log.log_message(request, turn.stream.stats, 200)
        except ConnectionClosed:
            return
        except Exception as error:  # report and keep the socket for the next message
            status, message, _ = describe_exception(request, error)
            access_log.log_message(request, None, status)
            await ws.send(ERROR_PREFIX + message)
    await ws.close(1001, "server shutting down")


def register(app: Sanic) -> None:
    app.add_websocket_route(chat_ws, "/chat/ws", name="chat_ws", error_format="json")
