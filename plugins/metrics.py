"""Prometheus metrics (filled in by the plugins work)."""

from __future__ import annotations

from inferd.plugins.base import Plugin, PluginConfig


class MetricsConfig(PluginConfig):
    enabled: bool = True


class MetricsPlugin(Plugin):
    name = "metrics"
    Config = MetricsConfig
