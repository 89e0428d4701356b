"""Per-key rate limiting, counted by the `limits` library.

A request counts against its caller: the API key that auth verified
(`request.ctx.owner`, so list auth before rate_limit), otherwise the client address.
The client address is the socket's peer, or -- only when that peer is one of
`trusted_proxies` -- the nearest untrusted hop of X-Forwarded-For, so clients cannot
pick their own address. Counters live in `storage_uri`: "memory://" is per process; a
shared server ("redis://host:6379", "memcached://...") gives several replicas one limit.

Every limited response carries X-RateLimit-Limit/-Remaining/-Reset; a refusal is 429
{"error": "Rate limit exceeded"} with Retry-After. A WebSocket handshake is refused when
the caller has nothing left, without using any of it: each chat message on the socket
counts as one request, and a message over the limit gets an `__ERROR__:` frame.
"""

from __future__ import annotations

import ipaddress
import math
import time
from typing import Literal

from limits import RateLimitItem, RateLimitItemPerMinute
from limits.aio.strategies import STRATEGIES
from limits.storage import storage_from_string
from pydantic import Field, PositiveInt
from sanic import Request, Sanic
from sanic.response import HTTPResponse

from inferd.errors import TooManyRequests, error_response
from inferd.generation import owner_of
from inferd.plugins.auth import digest_of
from inferd.plugins.base import Plugin, PluginConfig
from inferd.plugins.paths import PathSet

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class RateLimitConfig(PluginConfig):
    enabled: bool = False
    requests_per_minute: int = Field(60, ge=1)
    # API key (or "sha256:<hex>" of one) -> its own requests per minute.
    per_key: dict[str, PositiveInt] = Field(default_factory=dict)
    strategy: Literal["fixed-window", "moving-window", "sliding-window-counter"] = "fixed-window"
    storage_uri: str = "memory://"
    trusted_proxies: list[str] = Field(default_factory=list)
    # Never limited: probes, the scraper, and the web page's own files ("*" = prefix).
    exempt_paths: list[str] = Field(
        default_factory=lambda: ["/health", "/readiness", "/metrics", "/", "/static/*"]
    )


class RateLimitPlugin(Plugin):
    name = "rate_limit"
    Config = RateLimitConfig
    config: RateLimitConfig
    failure_mode = "fail_closed"  # a broken limiter must not lift the limit

    def __init__(self, config: RateLimitConfig | None = None) -> None:
        super().__init__(config)
        uri = self.config.storage_uri
        self.storage = storage_from_string(uri if uri.startswith("async+") else f"async+{uri}")
        self.limiter = STRATEGIES[self.config.strategy](self.storage)
        self.default = RateLimitItemPerMinute(self.config.requests_per_minute)
        self.per_key = {
            digest_of(key): RateLimitItemPerMinute(n) for key, n in self.config.per_key.items()
        }
        self.proxies: list[Network] = [
            ipaddress.ip_network(p, strict=False) for p in self.config.trusted_proxies
        ]
        self.exempt = PathSet(self.config.exempt_paths)

    def setup(self, app: Sanic) -> None:
        @app.before_server_start
        async def check_storage(app: Sanic) -> None:
            # A shared counter store that is down should stop start-up, not fail requests.
            try:
                reachable = await self.storage.check()
            except Exception:
                reachable = False
            if not reachable:
                raise RuntimeError(f"rate_limit: storage {self.config.storage_uri} is unreachable")

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.proxies)

    def client_address(self, request: Request) -> str:
        peer = request.ip
        if not self.proxies or not self._trusted(peer):
            return peer
        hops = [
            hop.strip()
            for header in request.headers.getall("x-forwarded-for", [])
            for hop in header.split(",")
            if hop.strip()
        ]
        # Walk back from our side: the first hop that is not our proxy is the client.
        for hop in reversed(hops):
            if not self._trusted(hop):
                return hop
        return hops[0] if hops else peer

    def _caller(self, request: Request) -> tuple[RateLimitItem, str]:
        owner = owner_of(request)
        if owner is not None:
            return self.per_key.get(owner, self.default), f"key:{owner}"
        return self.default, f"addr:{self.client_address(request)}"

    async def _check(self, request: Request, *, spend: bool) -> tuple[bool, dict[str, str]]:
        item, caller = self._caller(request)
        check = self.limiter.hit if spend else self.limiter.test
        allowed = await check(item, "inferd", caller)
        reset, remaining = await self.limiter.get_window_stats(item, "inferd", caller)
        headers = {
            "X-RateLimit-Limit": str(item.amount),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(math.ceil(reset)),
        }
        if not allowed:
            headers["Retry-After"] = str(max(1, math.ceil(reset - time.time())))
        return allowed, headers

    async def on_request(self, request: Request) -> HTTPResponse | None:
        if request.path in self.exempt:
            return None
        # A handshake only checks: the socket's messages are what count.
        handshake = request.route is not None and request.route.extra.websocket
        allowed, headers = await self._check(request, spend=not handshake)
        if not allowed:
            return error_response(429, "Rate limit exceeded", headers)
        request.ctx.rate_limit_headers = headers
        return None

    async def on_response(self, request: Request, response: HTTPResponse) -> None:
        headers = getattr(request.ctx, "rate_limit_headers", None)
        if headers:
            response.headers.update(headers)

    async def on_websocket_message(self, request: Request, message: str | bytes) -> None:
        if request.path in self.exempt:
            return
        allowed, headers = await self._check(request, spend=True)
        if not allowed:
            retry = headers["Retry-After"]
            raise TooManyRequests(f"Rate limit exceeded; retry after {retry} s", headers=headers)
