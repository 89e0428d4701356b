"""inferd/health.py: GET /health and GET /readiness."""

from __future__ import annotations

import re

from inferd.testing.fakes import FakeBackend, make_app
from tests.streams import wait_for

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def _models(**fields):
    return [{"id": "fake", "name": "fake/model", "path": "/nonexistent/fake", **fields}]


async def test_health_reports_ok_with_a_utc_timestamp(tmp_path):
    app = make_app(tmp_path)
    _, response = await app.asgi_client.get("/health")
    assert response.status == 200
    assert response.json["status"] == "ok"
    assert response.json["uptime"] == "running"
    assert response.json["uptime_seconds"] >= 0
    assert TIMESTAMP.match(response.json["timestamp"])


async def test_health_and_readiness_answer_head_probes(tmp_path):
    app = make_app(tmp_path)
    for path in ("/health", "/readiness"):
        _, response = await app.asgi_client.head(path)
        assert response.status == 200, path


async def test_health_does_not_load_any_model(tmp_path):
    backend = FakeBackend()
    app = make_app(tmp_path, backend)
    _, response = await app.asgi_client.get("/health")
    assert response.status == 200
    assert backend.threads == set()
    assert app.ctx.registry.workers() == []


async def test_readiness_is_ready_without_preloaded_models(tmp_path):
    app = make_app(tmp_path)
    _, response = await app.asgi_client.get("/readiness")
    assert response.status == 200
    assert response.json["status"] == "ready"
    assert response.json["models_available"] == 0
    assert TIMESTAMP.match(response.json["timestamp"])


async def test_readiness_is_loading_until_the_preloaded_model_is_loaded(tmp_path):
    backend = FakeBackend(load_delay=0.3)
    app = make_app(tmp_path, backend, models=_models(preload=True))

    _, response = await app.asgi_client.get("/readiness")
    assert response.status == 503
    assert response.json["status"] == "loading"
    assert response.json["loading"] == ["fake@cpu"]
    assert response.json["models_available"] == 0

    worker = app.ctx.registry.worker("fake")
    await wait_for(lambda: worker.state == "ready")
    _, response = await app.asgi_client.get("/readiness")
    assert response.status == 200
    assert response.json["status"] == "ready"
    assert response.json["models_available"] == 1
    # The model was loaded in the background on its own thread, not by a request.
    assert backend.threads == {"inferd-fake@cpu"}


async def test_readiness_names_a_failed_preload_and_logs_why(tmp_path, caplog):
    backend = FakeBackend(load_error="weights at /secret/path/model are corrupt")
    app = make_app(tmp_path, backend, models=_models(preload=True))
    await app.asgi_client.get("/readiness")  # starts the preload
    worker = app.ctx.registry.worker("fake")
    await wait_for(lambda: worker.state == "failed")

    _, response = await app.asgi_client.get("/readiness")
    assert response.status == 503
    assert response.json["status"] == "failed"
    # /readiness is public: paths, hub ids and library text stay in the log.
    assert response.json["errors"] == {"fake@cpu": "failed to load; the server log says why"}
    assert "/secret/path" not in response.text
    assert "weights at /secret/path/model are corrupt" in caplog.text
    assert response.json["models_available"] == 0


async def test_readiness_fails_when_a_preload_device_is_not_on_this_server(tmp_path, caplog):
    app = make_app(tmp_path, models=_models(preload=True, device="metal"))
    _, response = await app.asgi_client.get("/readiness")
    assert response.status == 503
    assert response.json["status"] == "failed"
    assert response.json["errors"] == {"fake@metal": "failed to load; the server log says why"}
    assert "device 'metal' is not available on this server" in caplog.text
    assert "cpu, cuda" in caplog.text


async def test_readiness_ignores_models_that_are_not_preloaded(tmp_path):
    models = [
        *_models(preload=True),
        {"id": "lazy", "name": "lazy/model", "path": "/nonexistent/lazy", "preload": False},
    ]
    app = make_app(tmp_path, models=models)
    await app.asgi_client.get("/readiness")
    await wait_for(lambda: app.ctx.registry.worker("fake").state == "ready")
    _, response = await app.asgi_client.get("/readiness")
    assert response.status == 200
    assert response.json["status"] == "ready"
    assert [worker.label for worker in app.ctx.registry.workers()] == ["fake@cpu"]
