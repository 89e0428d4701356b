"""API-key authentication: `Authorization: Bearer <key>` on every non-public path (or,
for a browser's WebSocket handshake, the `inferd.key.<base64url>` subprotocol: ws_auth.py).

Keys come from `[auth] api_keys` and from the environment variable that `api_keys_env`
names (comma-separated), so secrets need not sit in a file; an entry written as
"sha256:<hex>" is the digest of a key rather than the key. Keys are held and compared
only as SHA-256 digests, against every configured key with `hmac.compare_digest`, so the
time a check takes says nothing about how close a guess was.

The caller's key digest becomes `request.ctx.owner`: sessions belong to it
(inferd/sessions.py) and the rate limiter counts by it. /health and /readiness are
always public; `public_paths` adds more (exact paths, or prefixes ending in "*").
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re

from pydantic import Field
from sanic import Request
from sanic.response import HTTPResponse

from inferd.errors import error_response
from inferd.plugins.base import Plugin, PluginConfig
from inferd.plugins.paths import PathSet
from inferd.ws_auth import key_from

ALWAYS_PUBLIC = ("/health", "/readiness")
_HEX_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def key_digest(key: str) -> str:
    """The identity a key stands for: its SHA-256 hex digest (never the key itself)."""
    return hashlib.sha256(key.encode()).hexdigest()


def digest_of(entry: str) -> str:
    """A configured key's digest; "sha256:<hex>" entries are digests already."""
    if not entry.startswith("sha256:"):
        return key_digest(entry)
    digest = entry.removeprefix("sha256:").lower()
    if not _HEX_DIGEST.match(digest):
        raise ValueError(f"{entry!r} is not 'sha256:' followed by 64 hex digits")
    return digest


class AuthConfig(PluginConfig):
    enabled: bool = False
    api_keys: list[str] = Field(default_factory=list)
    api_keys_env: str = "INFERD_API_KEYS"
    # The web page and its files hold no secret; the API calls it makes still need a key.
    public_paths: list[str] = Field(default_factory=lambda: ["/", "/static/*"])


class AuthPlugin(Plugin):
    name = "auth"
    Config = AuthConfig
    config: AuthConfig
    failure_mode = "fail_closed"  # a broken check must not let callers in

    def __init__(self, config: AuthConfig | None = None) -> None:
        super().__init__(config)
        env = self.config.api_keys_env
        from_env = os.environ.get(env, "").split(",") if env else []
        entries = [key.strip() for key in [*self.config.api_keys, *from_env] if key.strip()]
        if not entries:
            raise ValueError(
                f"auth is enabled but has no API keys: set [auth] api_keys or the {env} "
                "environment variable (comma-separated keys)"
            )
        self._digests = [digest_of(entry).encode() for entry in entries]
        self._public = PathSet([*ALWAYS_PUBLIC, *self.config.public_paths])

    def is_public(self, path: str) -> bool:
        return path in self._public

    def _known(self, digest: str) -> bool:
        presented = digest.encode()
        found = False
        for known in self._digests:  # no early exit: every check takes as long
            found |= hmac.compare_digest(presented, known)
        return found

    async def on_request(self, request: Request) -> HTTPResponse | None:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        key = key.strip() if scheme.lower() == "bearer" else ""
        if not key:  # a browser's WebSocket offers its key as a subprotocol (ws_auth.py)
            key = key_from(request) or ""
        digest = key_digest(key) if key else None
        if digest is not None and self._known(digest):
            request.ctx.owner = digest
            return None
        if self.is_public(request.path):
            return None
        message = (
            "invalid API key"
            if key
            else "missing API key: send the header 'Authorization: Bearer <key>'"
        )
        return error_response(401, message, {"WWW-Authenticate": "Bearer"})
