"""Cross-origin requests: lets browser apps on other origins call the API.

Off by default. A preflight (`OPTIONS` with `Access-Control-Request-Method`) from an
allowed origin is answered here with 204, before any other plugin: browsers send it
without credentials, so auth must not see it. Other responses get the
`Access-Control-Allow-Origin` header and expose `X-Session-Id` and the rate-limit
headers, which a browser script could not read otherwise. List this plugin first.
"""

from __future__ import annotations

from pydantic import Field
from sanic import Request, Sanic
from sanic.response import HTTPResponse, empty

from inferd.plugins.base import Plugin, PluginConfig

EXPOSED = ", ".join(
    ["X-Session-Id", "X-Request-Id", "Retry-After"]
    + [f"X-RateLimit-{part}" for part in ("Limit", "Remaining", "Reset")]
)


class CorsConfig(PluginConfig):
    enabled: bool = False
    # Origins allowed to call the API, e.g. ["https://app.example.com"]; "*" allows any.
    allow_origins: list[str] = Field(default_factory=list)
    max_age: int = Field(600, ge=0)  # seconds a browser may cache a preflight answer


def route_methods(app: Sanic) -> str:
    """Every method some route takes, and OPTIONS: what a preflight may be told."""
    methods = {method for route in app.router.routes for method in route.methods}
    return ", ".join(sorted(methods | {"OPTIONS"}))


class CorsPlugin(Plugin):
    name = "cors"
    Config = CorsConfig
    config: CorsConfig
    sees_health_checks = True  # browser dashboards may poll /health cross-origin
    _methods: str | None = None  # route_methods, once every route is in

    def _allowed(self, request: Request) -> str | None:
        origin = request.headers.get("origin")
        if origin is None:
            return None
        if "*" in self.config.allow_origins:
            return "*"
        return origin if origin in self.config.allow_origins else None

    async def on_request(self, request: Request) -> HTTPResponse | None:
        method = request.headers.get("access-control-request-method")
        if request.method != "OPTIONS" or method is None:
            return None
        origin = self._allowed(request)
        if origin is None:
            return empty(status=204)  # no CORS headers: the browser refuses the call
        if self._methods is None:
            self._methods = route_methods(request.app)
        return empty(
            status=204,
            headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": self._methods,
                "Access-Control-Allow-Headers": request.headers.get(
                    "access-control-request-headers", "Authorization, Content-Type"
                ),
                "Access-Control-Max-Age": str(self.config.max_age),
                "Vary": "Origin",
            },
        )

    async def on_response(self, request: Request, response: HTTPResponse) -> None:
        origin = self._allowed(request)
        if origin is not None:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = EXPOSED
            response.headers["Vary"] = "Origin"
