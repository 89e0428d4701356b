"""docs/grafana-dashboard.json: a dashboard Grafana imports, over metrics inferd exports.

Grafana's importer wants a dashboard model (title, uid, schemaVersion, panels with ids
and grid positions) and, for a shareable file, a declared datasource input that every
panel uses. The queries must name metrics that /metrics really serves: each is checked
against a scrape of a real app that has served traffic.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from inferd.testing.fakes import make_app

DASHBOARD = Path(__file__).parents[1] / "docs" / "grafana-dashboard.json"
PROMQL_WORDS = {
    "sum", "max", "by", "rate", "histogram_quantile", "label_values",
    "le", "model", "device", "reason", "finish_reason", "endpoint", "status",
}  # fmt: skip
PANEL_TYPES = {"row", "timeseries", "stat"}


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def _targets(dashboard: dict) -> list[dict]:
    return [target for panel in dashboard["panels"] for target in panel.get("targets", [])]


def _metric_names(expr: str) -> set[str]:
    expr = re.sub(r'"[^"]*"', "", expr)  # label values
    expr = re.sub(r"\$\w+", "", expr)  # Grafana variables
    return set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", expr)) - PROMQL_WORDS


def test_it_is_a_dashboard_model_grafana_imports(dashboard):
    for key in ("title", "uid", "schemaVersion", "panels", "templating", "time"):
        assert key in dashboard, key
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert {panel["type"] for panel in dashboard["panels"]} <= PANEL_TYPES
    for panel in dashboard["panels"]:
        assert panel["title"], panel["id"]
        if panel["type"] != "row":
            refs = [target["refId"] for target in panel["targets"]]
            assert refs and len(refs) == len(set(refs)), panel["title"]


def test_panels_fit_the_grid_without_overlapping(dashboard):
    taken: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, f"{panel['title']!r} overlaps another panel"
        taken |= cells


def test_every_query_uses_the_declared_prometheus_input(dashboard):
    (source,) = dashboard["__inputs"]
    assert (source["type"], source["pluginId"]) == ("datasource", "prometheus")
    expected = {"type": "prometheus", "uid": "${" + source["name"] + "}"}
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == expected, panel["title"]
    for target in _targets(dashboard):
        assert target["datasource"] == expected
        assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]


def test_the_panels_cover_throughput_ttft_itl_queue_and_errors(dashboard):
    names = set().union(*(_metric_names(t["expr"]) for t in _targets(dashboard)))
    for metric in (
        "completions_tokens_total",
        "time_to_first_token_seconds_bucket",
        "inter_token_latency_seconds_bucket",
        "requests_waiting",
        "requests_refused_total",
        "completions_errors_total",
    ):
        assert metric in names, metric


async def test_every_metric_a_query_names_is_served_by_metrics(dashboard, tmp_path):
    app = make_app(tmp_path)
    await app.asgi_client.post("/completions", json={"model": "fake", "prompt": "Hi"})
    await app.asgi_client.post("/chat/completions", json={"model-name": "fake", "prompt": "Hi"})
    await app.asgi_client.post("/completions", json={"model": "fake"})  # a 400
    await app.asgi_client.get("/health")
    _, response = await app.asgi_client.get("/metrics")
    served = {
        line.split("{")[0].split(" ")[0]
        for line in response.text.splitlines()
        if line and not line.startswith("#")
    }
    variable = dashboard["templating"]["list"][0]["query"]["query"]
    for expr in [target["expr"] for target in _targets(dashboard)] + [variable]:
        missing = _metric_names(expr) - served
        assert not missing, f"{expr} names metrics /metrics does not serve: {missing}"
