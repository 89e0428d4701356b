"""Per-key rate limiting (filled in by the plugins work)."""

from __future__ import annotations

from pydantic import Field

from inferd.plugins.base import Plugin, PluginConfig


class RateLimitConfig(PluginConfig):
    enabled: bool = False
    requests_per_minute: int = Field(60, ge=1)


class RateLimitPlugin(Plugin):
    name = "rate_limit"
    Config = RateLimitConfig
