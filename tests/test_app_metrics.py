"""inferd/app_metrics.py: plugins' own metrics live in the app's registry, on /metrics."""

from __future__ import annotations

import pytest

from inferd.app_metrics import app_metrics
from inferd.config import ConfigError
from inferd.testing import make_app, metric_value
from tests.plugin_doubles import HERE

COUNTING = f"{HERE}:Counting"


async def test_a_plugins_metrics_are_served_with_the_built_in_ones(tmp_path):
    app = make_app(tmp_path, plugins={"enabled": ["metrics", COUNTING]})
    await app.asgi_client.get("/models")
    await app.asgi_client.get("/health")  # the counting plugin does not see health checks
    _, response = await app.asgi_client.get("/metrics")
    text = response.text
    assert metric_value(text, "doubles_requests_total", path="/models") == 1
    assert metric_value(text, "doubles_requests_total", path="/health") == 0
    # The scrape itself passed the plugin before it was served: /models, then /metrics.
    assert metric_value(text, "doubles_path_length_bucket", le="50.0") == 2
    assert metric_value(text, "doubles_path_length_bucket", le="5.0") == 0
    assert metric_value(text, "doubles_last_path_length") == len("/metrics")
    assert metric_value(text, "health_check_requests_total", endpoint="health") == 1


async def test_the_registry_works_without_the_metrics_plugin(tmp_path):
    app = make_app(tmp_path, plugins={"enabled": [COUNTING]})
    await app.asgi_client.get("/models")
    _, response = await app.asgi_client.get("/metrics")
    assert response.status == 404  # nothing serves it
    registry = app_metrics(app).registry
    assert registry.get_sample_value("doubles_requests_total", {"path": "/models"}) == 1


@pytest.mark.parametrize("order", [["metrics", COUNTING], [COUNTING, "metrics"]])
def test_a_name_taken_twice_stops_start_up(tmp_path, order):
    counting = {"counter": "completions_tokens"}  # the metrics plugin's
    with pytest.raises(ConfigError, match=r"failed to start: .*completions_tokens"):
        make_app(tmp_path, plugins={"enabled": order}, counting=counting)


def test_each_app_has_its_own_registry(tmp_path):
    first = make_app(tmp_path / "a", plugins={"enabled": [COUNTING]})
    second = make_app(tmp_path / "b", plugins={"enabled": [COUNTING]})
    assert app_metrics(first).registry is not app_metrics(second).registry
