"""API-key authentication (filled in by the plugins work)."""

from __future__ import annotations

from pydantic import Field

from inferd.plugins.base import Plugin, PluginConfig


class AuthConfig(PluginConfig):
    enabled: bool = False
    api_keys: list[str] = Field(default_factory=list)


class AuthPlugin(Plugin):
    name = "auth"
    Config = AuthConfig
