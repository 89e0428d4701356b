"""Test helpers for reading streams: SSE over a live server, and polling.

The SSE parser itself ships with the package (inferd/testing/sse.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
from sanic import Sanic

from inferd.testing.sse import SseStream, parse_sse


async def post_sse(base_url: str, path: str, body: dict) -> tuple[httpx.Response, SseStream]:
    """POST to a live server and read the whole SSE response."""
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        response = await client.post(path, json=body)
    return response, parse_sse(response.text)


async def wait_for(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    """Poll `condition` until it holds; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.01)


# The non-streaming generating routes, with bodies that generate until cancelled (on
# an endless fake backend): for a client that gives up before the JSON answer is ready.
LONG_JSON_REQUESTS = [
    ("/completions", {"model": "fake", "prompt": "Hi", "max_tokens": 100000}),
    ("/v1/completions", {"model": "fake", "prompt": "Hi", "max_tokens": 100000}),
    ("/v1/chat/completions", {"model": "fake", "messages": [{"role": "user", "content": "Hi"}]}),
]


async def post_and_go_away(base_url: str, path: str, body: dict, after: float = 0.3) -> None:
    """POST, then close the connection after `after` seconds without an answer."""
    async with httpx.AsyncClient(base_url=base_url) as client:
        try:
            await client.post(path, json=body, timeout=after)
        except httpx.ReadTimeout:
            return
    raise AssertionError(f"{path} answered within {after} s; the test needs it to take longer")


def slow_session_writes(app: Sanic, seconds: float) -> None:
    """Make every session write take `seconds` longer, on the store's own thread."""
    store = app.ctx.sessions.store
    append = store.append

    def slow_append(*args: Any, **kwargs: Any) -> Any:
        time.sleep(seconds)
        return append(*args, **kwargs)

    store.append = slow_append


def stored_roles(app: Sanic, session_id: str) -> list[str]:
    """The session's roles as the storage holds them right now, read around the app's
    queue of store calls, as another replica sharing the store would read them."""
    session = app.ctx.sessions.store.get(session_id)
    return [] if session is None else [m["role"] for m in session.messages]
