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
    states = {worker.label: worker.state for worker in registry.preload_workers()}
    errors = {w.label: w.error for w in registry.preload_workers() if w.state == "failed"}
    errors.update(registry.preload_errors)
    body: dict[str, object] = {
        "models_available": len(registry.loaded_model_ids()),
        "timestamp": _timestamp(),
    }
    if errors:
        return json({"status": "failed", **body, "errors": errors}, status=503)
    if any(state != "ready" for state in states.values()):
        loading = sorted(label for label, state in states.items() if state != "ready")
        return json({"status": "loading", **body, "loading": loading}, status=503)
    return json({"status": "ready", **body})


def register(app: Sanic) -> None:
    app.add_route(health, "/health", methods=["GET"], name="health")
    app.add_route(readiness, "/readiness", methods=["GET"], name="readiness")
