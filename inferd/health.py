"""GET /health (liveness) and GET /readiness (are the preloaded models loaded?)."""

from __future__ import annotations

import time
from datetime import datetime, timezone

from sanic import Request, Sanic
from sanic.response import HTTPResponse, json

_STARTED = time.monotonic()


def _timestamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


async def health(request: Request) -> HTTPResponse:
    return json(
        {
            "status": "ok",
            "uptime": "running",
            "uptime_seconds": round(time.monotonic() - _STARTED, 3),
            "timestamp": _timestamp(),
        }
    )


async def readiness(request: Request) -> HTTPResponse:
    """503 until every `preload` model is loaded; names the models that failed and why."""
    registry = request.app.ctx.registry
    states = registry.preload_states()
    errors = {label: error for label, (state, error) in states.items() if state == "failed"}
    body: dict[str, object] = {
        "models_available": len(registry.loaded_model_ids()),
        "timestamp": _timestamp(),
    }
    if errors:
        return json({"status": "failed", **body, "errors": errors}, status=503)
    loading = sorted(label for label, (state, _) in states.items() if state != "ready")
    if loading:
        return json({"status": "loading", **body, "loading": loading}, status=503)
    return json({"status": "ready", **body})


def register(app: Sanic) -> None:
    # HEAD too: load balancers and uptime checkers often probe with it.
    app.add_route(health, "/health", methods=["GET", "HEAD"], name="health")
    app.add_route(readiness, "/readiness", methods=["GET", "HEAD"], name="readiness")
