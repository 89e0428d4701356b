"""Clients for a live server: one generation over each transport, and /metrics values.

Plugin tests run the same checks on every transport; `generate` hides how each
transport asks and answers. "json" asks POST /completions, "sse" asks POST
/chat/completions, "websocket" sends a chat message on /chat/ws -- the endpoints
API.md's clients use.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from inferd.testing.sse import parse_sse

TRANSPORTS = ("json", "sse", "websocket")
MODEL = "fake"


@dataclass
class Reply:
    """What a client got: the status, headers, the text, or the error message."""

    status: int  # a WebSocket that was accepted answers 200 here
    headers: Mapping[str, str] = field(default_factory=dict)
    text: str = ""
    error: str | None = None
    session_id: str | None = None
    finish_reason: str | None = None  # JSON only: SSE and WebSocket replies do not say


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
    model: str = MODEL,
) -> Reply:
    """Ask the server at `base` for one generation over `transport` (see TRANSPORTS).

    A failure is a Reply too: its `status` (the HTTP status, or 200 for an accepted
    WebSocket) and `error` (the `{"error": ...}` message, an SSE error event or an
    `__ERROR__:` frame).
    """
    headers = dict(headers or {})
    if transport not in TRANSPORTS:
        raise ValueError(f"transport {transport!r}: use one of {TRANSPORTS}")
    if transport == "websocket":
        body: dict[str, Any] = {"model-name": model, "prompt": prompt}
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
                "/completions", json={"model": model, "prompt": prompt}, headers=headers
            )
            data = response.json()
            return Reply(
                response.status_code,
                response.headers,
                data.get("text", ""),
                data.get("error"),
                finish_reason=data.get("finish_reason"),
            )
        chat = {"model-name": model, "prompt": prompt}
        if session_id:
            chat["session-id"] = session_id
        async with client.stream(
            "POST", "/chat/completions", json=chat, headers=headers
        ) as response:
            raw = (await response.aread()).decode()
        if response.status_code != 200:
            return Reply(response.status_code, response.headers, error=_error_of(raw.encode()))
        events = parse_sse(raw)
        errors = events.named("error")
        return Reply(
            200,
            response.headers,
            events.text,
            error=errors[0].data if errors else None,
            session_id=response.headers.get("x-session-id"),
        )


def metric_value(exposition: str, name: str, **labels: str) -> float:
    """One sample's value in Prometheus text (0 when absent), e.g.
    `metric_value(text, "completions_tokens_total", model="fake/model")`."""
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


async def scrape_metrics(
    base: str, path: str = "/metrics", headers: Mapping[str, str] | None = None
) -> str:
    """GET the Prometheus text of a live server (fails unless it answers 200)."""
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        response = await client.get(path, headers=dict(headers or {}))
    if response.status_code != 200:
        raise AssertionError(f"GET {path} answered {response.status_code}: {response.text}")
    return response.text
