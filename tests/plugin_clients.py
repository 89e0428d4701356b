"""One generation over each transport (JSON, SSE, WebSocket) against a live server.

The plugin tests run the same checks on every transport; this module hides how each
transport asks and answers. JSON asks POST /completions, SSE asks POST /chat/completions,
WebSocket sends a chat message on /chat/ws.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from tests.streams import parse_sse

TRANSPORTS = ("json", "sse", "websocket")
MODEL = "fake"


@dataclass
class Reply:
    status: int  # a WebSocket that was accepted answers 200 here
    headers: Mapping[str, str] = field(default_factory=dict)
    text: str = ""
    error: str | None = None
    session_id: str | None = None


def ws_url(base: str) -> str:
    return base.replace("http://", "ws://") + "/chat/ws"


async def ws_ask(ws: ClientConnection, body: dict[str, Any]) -> Reply:
    """Send one chat message on an open socket and read frames up to its end."""
    await ws.send(json.dumps(body))
    text = ""
    while True:
        frame = await ws.recv()
        assert isinstance(frame, str)
        if frame == "__END__":
            return Reply(200, text=text)
        if frame.startswith("__ERROR__:"):
            return Reply(200, text=text, error=frame.removeprefix("__ERROR__:"))
        text += frame


def _error_of(body: bytes) -> str | None:
    try:
        return json.loads(body).get("error")
    except ValueError:
        return None


async def generate(
    base: str,
    transport: str,
    headers: Mapping[str, str] | None = None,
    prompt: str = "hi",
    session_id: str | None = None,
) -> Reply:
    headers = dict(headers or {})
    if transport == "websocket":
        body: dict[str, Any] = {"model-name": MODEL, "prompt": prompt}
        if session_id:
            body["session-id"] = session_id
        try:
            async with connect(ws_url(base), additional_headers=headers) as ws:
                return await ws_ask(ws, body)
        except InvalidStatus as rejected:
            response = rejected.response
            return Reply(response.status_code, response.headers, error=_error_of(response.body))
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        if transport == "json":
            response = await client.post(
                "/completions", json={"model": MODEL, "prompt": prompt}, headers=headers
            )
            data = response.json()
            return Reply(
                response.status_code, response.headers, data.get("text", ""), data.get("error")
            )
        chat = {"model-name": MODEL, "prompt": prompt}
        if session_id:
            chat["session-id"] = session_id
        async with client.stream(
            "POST", "/chat/completions", json=chat, headers=headers
        ) as response:
            raw = (await response.aread()).decode()
        if response.status_code != 200:
            return Reply(response.status_code, response.headers, error=_error_of(raw.encode()))
        text = parse_sse(raw).text
        return Reply(200, response.headers, text, session_id=response.headers.get("x-session-id"))
