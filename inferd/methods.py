"""HTTP methods beyond each route's own: HEAD wherever GET works, Allow on every 405.

Sanic answers HEAD only on routes that list it, and its router leaves `Allow` off a 405
when one path has several routes told apart by method (`/chat/history/<id>`: GET,
DELETE, PATCH). RFC 9110 asks for both, so:

- `add_head_routes` gives every GET route a HEAD twin (as sanic-ext's AUTO_HEAD does):
  the same handler, so HEAD answers the same status and headers; Sanic sends no body
  for a HEAD request. WebSocket routes get none (their GET is an upgrade).
- `allowed_methods` finds the methods a path takes, for the 405 that lacks them.
"""

from __future__ import annotations

from sanic import Sanic
from sanic.constants import HTTP_METHODS
from sanic.exceptions import MethodNotAllowed, NotFound


def add_head_routes(app: Sanic) -> None:
    """HEAD on every GET route registered so far (call it once every route is in)."""
    for route in list(app.router.routes):
        if "GET" not in route.methods or "HEAD" in route.methods or route.extra.websocket:
            continue
        app.add_route(
            route.handler,
            route.uri,
            methods=["HEAD"],
            name=f"{route.name.rsplit('.', 1)[-1]}_head",
            strict_slashes=route.strict,
            error_format="json",
        )


def allowed_methods(app: Sanic, path: str, host: str | None = None) -> list[str]:
    """The methods some route of `path` takes (empty when no route matches it)."""
    allowed = []
    for method in HTTP_METHODS:
        try:
            app.router.get(path, method, host)
        except (MethodNotAllowed, NotFound):
            continue
        allowed.append(str(method))
    return allowed
