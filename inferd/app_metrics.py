"""The app's Prometheus registry: the metrics API for plugins.

Each app has one registry (never prometheus_client's global one: tests and embedders build
many apps in one process). The metrics plugin serves it at GET /metrics and registers
its own metrics in it; any plugin adds counters, histograms and gauges from its `setup`:

    def setup(self, app):
        self.refused = app_metrics(app).counter("guardrail_refused", "...", ["endpoint"])

Without the metrics plugin the registry still works; nothing serves it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from prometheus_client.registry import Collector
    from sanic import Sanic


class AppMetrics:
    """Creates metrics in the app's registry; a name used twice is an error at start-up."""

    def __init__(self) -> None:
        # auto_describe=False: collectors read at scrape time are not collected at start-up.
        self.registry = CollectorRegistry(auto_describe=False)

    def counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        """A counter; Prometheus shows it as `<name>_total`."""
        return self._register(Counter, name, documentation, labels)

    def histogram(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = Histogram.DEFAULT_BUCKETS,
    ) -> Histogram:
        """A histogram; `buckets` are upper bounds (seconds, for latencies)."""
        return self._register(Histogram, name, documentation, labels, buckets=tuple(buckets))

    def gauge(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Gauge:
        """A gauge (set, inc, dec); for values read at scrape time use `include`."""
        return self._register(Gauge, name, documentation, labels)

    def include(self, collector: Collector) -> None:
        """Any prometheus_client collector, e.g. one whose `collect()` reads live values."""
        try:
            self.registry.register(collector)
        except ValueError as error:  # a name another plugin took
            raise ValueError(f"metrics: {error}") from None

    def _register(
        self, kind: type, name: str, documentation: str, labels: Sequence[str], **extra: Any
    ) -> Any:
        try:
            return kind(name, documentation, list(labels), registry=self.registry, **extra)
        except ValueError as error:  # a duplicate or invalid name
            raise ValueError(f"metric {name!r}: {error}") from None


def app_metrics(app: Sanic) -> AppMetrics:
    """The metrics registry of `app` (what GET /metrics serves)."""
    return app.ctx.metrics
