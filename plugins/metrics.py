"""Prometheus metrics at GET /metrics: the app's registry (inferd/app_metrics.py).

API.md's names count requests, tokens, latency and errors; the rest are what operators
of vLLM-class servers watch (time to first token, inter-token latency, queue time,
end-to-end latency, prompt tokens, finish reasons, and -- read at each scrape -- running
and waiting requests, queue limits and refusals, loaded models, live sessions). The
lifecycle hooks record them, so JSON, SSE and WebSocket traffic count alike, each when
its stream ends.
docs/plugins.md lists every metric. List metrics first in [plugins] enabled so that it
also counts the requests that other plugins reject. Other plugins' metrics live in the
same registry and are served here too.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from sanic import Request, Sanic
from sanic.response import HTTPResponse, raw

from inferd.apidoc import describe
from inferd.app_metrics import app_metrics
from inferd.backends.base import TokenEvent
from inferd.errors import CLIENT_CLOSED
from inferd.plugins.base import Generation, Plugin, PluginConfig
from inferd.session_io import StoreUnavailable

LABELS = ("model", "device", "endpoint")
ERROR_ENDPOINTS = {
    "/completions": "completions",
    "/chat/completions": "chat",
    "/chat/ws": "chat",
    "/v1/completions": "v1.completions",
    "/v1/chat/completions": "v1.chat",
}
HEALTH_ENDPOINTS = {"/health": "health", "/readiness": "readiness"}
# Bucket bounds in seconds: per-token gaps, waits up to the first token, whole requests.
TOKEN_GAP = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5)
WAIT = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0)
REQUEST = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0)


class MetricsConfig(PluginConfig):
    enabled: bool = True
    path: str = "/metrics"


class LiveCollector:
    """Gauges read from the model registry, admission control and the session store at
    scrape time (the store's count is fetched off the event loop before each scrape)."""

    def __init__(self, app: Sanic) -> None:
        self.app = app
        self.sessions_active: int | None = None

    def collect(self) -> Iterator[Metric]:
        names = {model.id: model.name for model in self.app.ctx.registry.models}
        running = GaugeMetricFamily("requests_running", "Requests decoding now", labels=LABELS[:2])
        waiting = GaugeMetricFamily("requests_waiting", "Requests queued", labels=LABELS[:2])
        loaded = GaugeMetricFamily("model_loaded", "1 when loaded on the device", labels=LABELS[:2])
        for worker in self.app.ctx.registry.workers():
            model_id, _, device = worker.label.rpartition("@")  # labels are "<id>@<device>"
            labels = [names.get(model_id, model_id), device]
            running.add_metric(labels, worker.running)
            waiting.add_metric(labels, worker.waiting)
            loaded.add_metric(labels, 1 if worker.state == "ready" else 0)
        yield from (running, waiting, loaded)
        yield from self._admission()
        if self.sessions_active is not None:
            doc = "Chat sessions stored and not expired"
            yield GaugeMetricFamily("sessions_active", doc, value=self.sessions_active)

    def _admission(self) -> Iterator[Metric]:
        limit = GaugeMetricFamily(
            "requests_queue_limit", "Requests allowed to wait (max_queue)", labels=LABELS[:2]
        )
        refused = CounterMetricFamily(
            "requests_refused",
            "Requests refused with 503: queue_full (over max_queue) or queue_timeout",
            labels=[*LABELS[:2], "reason"],
        )
        for gate in self.app.ctx.admission.gates():
            limit.add_metric([gate.model, gate.device], gate.max_queue)
            for reason in ("queue_full", "queue_timeout"):
                refused.add_metric([gate.model, gate.device, reason], gate.refused[reason])
        yield from (limit, refused)


class MetricsPlugin(Plugin):
    name = "metrics"
    Config = MetricsConfig
    config: MetricsConfig
    sees_health_checks = True  # it counts them

    def __init__(self, config: MetricsConfig | None = None) -> None:
        super().__init__(config)
        # Created unregistered; setup() registers them in the app's registry.
        self._own: list[Counter | Histogram] = []
        self.registry: CollectorRegistry | None = None

        def counter(name: str, doc: str, labels: Sequence[str] = LABELS) -> Counter:
            self._own.append(metric := Counter(name, doc, labels, registry=None))
            return metric

        def histogram(name: str, doc: str, buckets: Sequence[float]) -> Histogram:
            self._own.append(metric := Histogram(name, doc, LABELS, buckets=buckets, registry=None))
            return metric

        by_transport = ("model", "device", "transport")
        self.health_checks = counter("health_check_requests", "Health checks", ["endpoint"])
        self.requests = {
            "completions": counter("completions_requests", "Completions queued", by_transport),
            "chat": counter("chat_completions_requests", "Chat turns queued", by_transport),
        }
        # The OpenAI-compatible routes count as completions and chat turns too; the
        # `endpoint` label of the other metrics tells them apart.
        self.requests["v1.completions"] = self.requests["completions"]
        self.requests["v1.chat"] = self.requests["chat"]
        self.errors = counter("completions_errors", "Failed requests", ["endpoint", "status"])
        self.finished = counter("requests_finished", "Generations", [*LABELS, "finish_reason"])
        # Labelled by (model, device, endpoint); children are looked up once, not per token.
        self.generation_metrics: dict[str, Counter | Histogram] = {
            "tokens": counter("completions_tokens", "Generated tokens"),
            "prompt_tokens": counter("prompt_tokens", "Prompt tokens of admitted requests"),
            "duration": histogram("completions_duration_seconds", "Admitted to finished", REQUEST),
            "e2e": histogram("request_e2e_latency_seconds", "Queued to finished", REQUEST),
            "queue": histogram("request_queue_time_seconds", "Queued to admitted", WAIT),
            "ttft": histogram("time_to_first_token_seconds", "Queued to first token", WAIT),
            "itl": histogram("inter_token_latency_seconds", "Between streamed pieces", TOKEN_GAP),
        }
        self._children: dict[tuple[str, str, str], dict[str, Any]] = {}

    def setup(self, app: Sanic) -> None:
        metrics = app_metrics(app)
        for metric in self._own:
            metrics.include(metric)
        self.live = LiveCollector(app)
        metrics.include(self.live)
        self.registry = metrics.registry
        app.add_route(
            self.serve, self.config.path, methods=["GET"], name="metrics", error_format="json"
        )

    @describe(
        "Prometheus metrics",
        "health",
        media=("text/plain", "application/openmetrics-text"),
        errors=(401, 500),
    )
    async def serve(self, request: Request) -> HTTPResponse:
        try:
            self.live.sessions_active = await request.app.ctx.sessions.count()
        except StoreUnavailable:  # a busy store must not fail the whole scrape
            self.live.sessions_active = None
        # Text format 0.0.4 by default; OpenMetrics for scrapers that ask for it.
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        return raw(encode(self.registry), content_type=content_type)

    async def on_response(self, request: Request, response: HTTPResponse) -> None:
        if request.path in HEALTH_ENDPOINTS:
            self.health_checks.labels(HEALTH_ENDPOINTS[request.path]).inc()
        elif response.status >= 400 and request.path in ERROR_ENDPOINTS:
            if response.status == CLIENT_CLOSED:  # the client left: not a failed request
                return
            self.errors.labels(ERROR_ENDPOINTS[request.path], str(response.status)).inc()

    def _of(self, generation: Generation) -> dict[str, Any]:
        key = (generation.model, generation.device, generation.endpoint)
        children = self._children.get(key)
        if children is None:
            metrics = self.generation_metrics.items()
            children = self._children[key] = {name: m.labels(*key) for name, m in metrics}
        return children

    def on_queued(self, generation: Generation) -> None:
        g = generation
        self.requests[g.endpoint].labels(g.model, g.device, g.transport).inc()

    def on_admitted(self, generation: Generation) -> None:
        metrics, stats = self._of(generation), generation.stats
        metrics["queue"].observe(stats.started_at - stats.queued_at)
        metrics["prompt_tokens"].inc(stats.prompt_tokens)

    def on_first_token(self, generation: Generation) -> None:
        stats = generation.stats
        if stats.first_token_at is not None:
            generation.state["metrics.ttft"] = True
            self._of(generation)["ttft"].observe(stats.first_token_at - stats.queued_at)

    def on_token(self, generation: Generation, event: TokenEvent) -> None:
        now = time.monotonic()
        last = generation.state.get("metrics.last")
        if last is not None:
            self._of(generation)["itl"].observe(now - last)
        generation.state["metrics.last"] = now

    def on_finished(self, generation: Generation) -> None:
        metrics, stats = self._of(generation), generation.stats
        finished_at = stats.finished_at or time.monotonic()
        if stats.first_token_at is not None and "metrics.ttft" not in generation.state:
            # No text was streamed (e.g. an immediate end of sequence); a token still was.
            metrics["ttft"].observe(stats.first_token_at - stats.queued_at)
        if stats.started_at:
            metrics["duration"].observe(finished_at - stats.started_at)
        metrics["e2e"].observe(finished_at - stats.queued_at)
        metrics["tokens"].inc(stats.generated_tokens)
        labels = (generation.model, generation.device, generation.endpoint)
        self.finished.labels(*labels, stats.finish_reason or "error").inc()
        if stats.finish_reason == "error" and generation.transport != "json":
            # A JSON failure becomes a 500 response, which on_response counts.
            self.errors.labels(generation.endpoint, "500").inc()
