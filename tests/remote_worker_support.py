"""What the gateway's tests share (tests/test_remote_worker*.py): real inferd upstreams,
a gateway over them, and HTTP chunks for the upstreams a test writes by hand."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from inferd.app import create_app
from inferd.config import parse_config
from inferd.testing import FakeBackend, live_server, make_app

MODEL = "remote/model"  # the gateway's name for it
UPSTREAM_MODEL = "fake/model"  # the upstreams' name (inferd.testing's fake model)


@asynccontextmanager
async def upstream(tmp_path: Path, backend: FakeBackend, **sections: Any) -> AsyncIterator[str]:
    """An inferd serving `backend` as "fake/model" (context 256); yields its /v1 URL.

    Its model's thread is stopped and joined on the way out: a failing FakeBackend's
    thread logs a traceback, and Python 3.11 formats one with ast.parse, which races
    with the next test's Sanic router compiling on the main thread (CPython's AST
    recursion counter is per interpreter: "AST constructor recursion depth mismatch")."""
    model = {"id": "fake", "name": UPSTREAM_MODEL, "path": "/nonexistent/fake"}
    app = make_app(tmp_path, backend, models=[{**model, "context_length": 256}], **sections)
    try:
        async with live_server(app) as base:
            yield base + "/v1"
    finally:
        for worker in app.ctx.registry.workers():
            worker.stop()
            await asyncio.to_thread(worker.join, 10)


@asynccontextmanager
async def gateway(tmp_path: Path, urls: list[str], **model: Any) -> AsyncIterator[str]:
    """An inferd whose only model is remote, served by `urls`; yields its base URL."""
    entry = {"id": "r", "name": MODEL, "backend": "openai", "url": urls}
    config = parse_config(
        {
            "sessions": {"path": str(tmp_path / "gateway-sessions")},
            "server": {"keepalive_interval": 0.2},
            "models": [{**entry, "upstream_model": UPSTREAM_MODEL, **model}],
        }
    )
    app = create_app(config)
    async with live_server(app) as base:
        yield base


def http_chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"
