"""One log line per request: its id, route, status, tokens and timings.

A request is logged when it is really over, which for a stream is long after its
response headers went out:
- JSON responses and errors as they are sent, SSE streams when their handler returns
  (Sanic's `http.lifecycle.response` signal fires then); a JSON request whose client
  went away before its answer was ready as 499 (errors.CLIENT_CLOSED), `disconnected`;
- a request whose handler did not finish (its client went away) when its connection
  closes, marked `disconnected`, with the status its response started with -- or 499,
  nginx's "client closed request", if none had; a WebSocket's upgrade likewise, as 101;
- each WebSocket chat message when its answer ends (ws.py calls `log_message`).

The fields go to the "inferd.access" logger as `extra`: the text format shows them in
the message, the JSON format (`[server] log_format = "json"`, see logs.py) as keys.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from sanic import Request, Sanic
from sanic.models.server_types import ConnInfo
from sanic.response import BaseHTTPResponse

from inferd.backends.base import GenerationStats
from inferd.errors import CLIENT_CLOSED

log = logging.getLogger("inferd.access")
_PENDING = "inferd_access_pending"  # conn_info.ctx: the request its connection is serving


@dataclass(slots=True)
class RequestRecord:
    request: Request
    started: float = field(default_factory=time.monotonic)
    generations: list[GenerationStats] = field(default_factory=list)
    status: int | None = None  # once the response (or its headers) went out


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _generation_fields(generations: list[GenerationStats]) -> dict[str, Any]:
    if not generations:
        return {}
    first = generations[0]
    queued = first.started_at - first.queued_at if first.started_at else None
    ttft = first.first_token_at - first.queued_at if first.first_token_at else None
    return {
        "prompt_tokens": sum(g.prompt_tokens for g in generations),
        "generated_tokens": sum(g.generated_tokens for g in generations),
        "finish_reason": first.finish_reason,
        "queue_ms": _ms(queued),
        "ttft_ms": _ms(ttft),
    }


def emit(
    request: Request,
    status: int,
    started: float,
    generations: list[GenerationStats],
    disconnected: bool = False,
) -> None:
    fields: dict[str, Any] = {
        "request_id": str(request.id),
        "method": request.method,
        "path": request.path,
        "route": request.route.name if request.route else None,
        "status": status,
        "client": request.remote_addr or request.ip,
        "duration_ms": _ms(time.monotonic() - started),
        **_generation_fields(generations),
        "disconnected": disconnected or None,
    }
    summary = " ".join(f"{key}={value}" for key, value in fields.items() if value is not None)
    log.info("%s", summary, extra=fields)


def _record(request: Request) -> RequestRecord | None:
    return getattr(request.ctx, "inferd_access", None)


def begin(request: Request) -> None:
    """A request arrived (request middleware); it is logged once it is over."""
    record = RequestRecord(request)
    request.ctx.inferd_access = record
    if request.conn_info is not None:
        setattr(request.conn_info.ctx, _PENDING, record)


def responded(request: Request, status: int) -> None:
    """The response's status line is going out (response middleware)."""
    record = _record(request)
    if record is not None:
        record.status = status


def add_generation(request: Request, stats: GenerationStats) -> None:
    """Count a generation (its stats fill in as it runs) in the request's line."""
    record = _record(request)
    if record is not None:
        record.generations.append(stats)


def log_message(request: Request, stats: GenerationStats | None, status: int) -> None:
    """One WebSocket chat message, answered (200) or refused/failed (its error status)."""
    started = stats.queued_at if stats else time.monotonic()
    emit(request, status, started, [stats] if stats else [])


async def _on_response(request: Request, response: BaseHTTPResponse) -> None:
    record = _record(request)
    if record is None:  # rejected before request middleware ran (e.g. a response timeout)
        record = RequestRecord(request)
    if request.conn_info is not None:
        setattr(request.conn_info.ctx, _PENDING, None)
    gone = response.status == CLIENT_CLOSED
    emit(request, response.status, record.started, record.generations, disconnected=gone)


async def _on_connection_closed(conn_info: ConnInfo) -> None:
    record: RequestRecord | None = getattr(conn_info.ctx, _PENDING, None)
    if record is not None:
        setattr(conn_info.ctx, _PENDING, None)
        websocket = record.request.headers.getone("upgrade", "").lower() == "websocket"
        status = 101 if websocket else record.status or CLIENT_CLOSED
        emit(record.request, status, record.started, record.generations, not websocket)


def install(app: Sanic) -> None:
    """Log every request; `begin` must also run as the first request middleware."""
    app.signal("http.lifecycle.response")(_on_response)
    app.signal("http.lifecycle.complete")(_on_connection_closed)
