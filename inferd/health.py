"""GET /health (liveness) and GET /readiness (are the preloaded models loaded?).

/readiness is public (auth never guards it), so it says which models failed but not
why: load errors carry absolute paths, hub ids and library text. The reasons are in
the server log.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

from sanic import Request, Sanic
from sanic.response import HTTPResponse, json

from inferd.apidoc import describe
from inferd.replies import HealthReply, ReadinessReply

_STARTED = time.monotonic()


def _timestamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@describe("Liveness", "health", replies={200: HealthReply}, errors=(500,))
async def health(request: Request) -> HTTPResponse:
    uptime = round(time.monotonic() - _STARTED, 3)
    return json(HealthReply(uptime_seconds=uptime, timestamp=_timestamp()).model_dump())


PUBLIC_LOAD_FAILURE = "failed to load; the server log says why"


@describe(
    "Readiness: are the preloaded models loaded?",
    "health",
    replies={200: ReadinessReply, 503: ReadinessReply},
    errors=(500,),
)
async def readiness(request: Request) -> HTTPResponse:
    """503 until every `preload` model is loaded (or while draining); names the models
    that failed. `models_available` counts the models that can serve right now."""
    registry = request.app.ctx.registry
    states = registry.preload_states()
    failed = [label for label, (state, _) in states.items() if state == "failed"]
    errors = dict.fromkeys(failed, PUBLIC_LOAD_FAILURE)
    available, now = len(registry.loaded_model_ids()), _timestamp()
    loading = sorted(label for label, (state, _) in states.items() if state != "ready")
    if request.app.ctx.lifecycle.draining:
        reply = ReadinessReply(status="draining", models_available=available, timestamp=now)
    elif errors:
        reply = ReadinessReply(
            status="failed", models_available=available, timestamp=now, errors=errors
        )
    elif loading:
        reply = ReadinessReply(
            status="loading", models_available=available, timestamp=now, loading=loading
        )
    else:
        reply = ReadinessReply(status="ready", models_available=available, timestamp=now)
    return json(reply.model_dump(), status=200 if reply.status == "ready" else 503)


def register(app: Sanic) -> None:
    # HEAD too: load balancers and uptime checkers often probe with it.
    app.add_route(health, "/health", methods=["GET", "HEAD"], name="health", error_format="json")
    app.add_route(
        readiness, "/readiness", methods=["GET", "HEAD"], name="readiness", error_format="json"
    )
