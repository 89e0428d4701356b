"""inferd/health.py: GET /health and GET /readiness."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import httpx

from inferd.testing.fakes import FakeBackend, make_app
from tests.processes import fake_server
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


# -- real server processes --------------------------------------------------------------


def _process_config(tmp_path, **model) -> Path:
    config = tmp_path / "config.toml"
    extra = "".join(f"{key} = {value}\n" for key, value in model.items())
    config.write_text(
        '[sessions]\npath = "sessions"\n\n'
        f'[[models]]\nid = "fake"\nname = "fake/model"\npath = "/x"\n{extra}'
    )
    return config


def test_readiness_of_a_real_server_before_and_after_loading(tmp_path):
    with fake_server(_process_config(tmp_path), tmp_path / "log", "--load-delay", "1.5") as server:
        server.wait_listening()
        before = httpx.get(f"{server.url}/readiness")
        server.wait_ready()  # preload = true by default: it loads without any request
        after = httpx.get(f"{server.url}/readiness")
    assert before.status_code == 503
    assert (before.json()["status"], before.json()["models_available"]) == ("loading", 0)
    assert after.status_code == 200
    assert (after.json()["status"], after.json()["models_available"]) == ("ready", 1)


def test_a_real_server_keeps_load_errors_out_of_readiness(tmp_path):
    error = "cannot open /home/ops/secret-models/qwen: HFValidationError(repo 'org/x')"
    options = ("--load-error", error)
    with fake_server(_process_config(tmp_path), tmp_path / "log", *options) as server:
        server.wait_listening()
        deadline = time.monotonic() + 30
        while (response := httpx.get(f"{server.url}/readiness")).json()["status"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        log = server.log_text()
    assert response.status_code == 503
    assert response.json()["errors"] == {"fake@cpu": "failed to load; the server log says why"}
    for secret in ("/home/ops", "secret-models", "HFValidationError", "org/x"):
        assert secret not in response.text
    assert error in log  # the operator still finds it


def test_lazy_models_stay_possible_and_count_once_loaded(tmp_path):
    config = _process_config(tmp_path, preload="false")
    with fake_server(config, tmp_path / "log") as server:
        server.wait_ready()
        lazy = httpx.get(f"{server.url}/readiness").json()
        httpx.post(f"{server.url}/completions", json={"model": "fake", "prompt": "x"})
        loaded = httpx.get(f"{server.url}/readiness").json()
    assert (lazy["status"], lazy["models_available"]) == ("ready", 0)
    assert (loaded["status"], loaded["models_available"]) == ("ready", 1)


async def test_health_answers_quickly_while_32_streams_decode(tmp_path):
    """The event loop stays free while 32 streams decode (about a thousand tokens a second
    in all: 1 ms per token and stream). /health is probed from its own thread, so the
    client's own loop, busy reading the streams, does not count. Prints the p50/p99 it
    measured; the issue's 50 ms target is measured on stories260K by benchmarks/soak.py."""
    config = _process_config(tmp_path, max_concurrent=32)
    options = ("--endless", "--step-delay", "0.001", "--context-length", "1000000")
    with fake_server(config, tmp_path / "log", *options) as server:
        await asyncio.to_thread(server.wait_ready)
        body = {"model": "fake", "prompt": "Hi", "stream": True, "max_tokens": 100_000}
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:

            async def stream() -> None:
                async with client.stream("POST", "/completions", json=body) as response:
                    async for _ in response.aiter_bytes():
                        pass

            streams = [asyncio.create_task(stream()) for _ in range(32)]
            deadline = time.monotonic() + 30
            while (running := _gauge((await client.get("/metrics")).text, "requests_running")) < 32:
                assert time.monotonic() < deadline, f"only {running} streams decoding"
                await asyncio.sleep(0.05)
            timings = await asyncio.to_thread(_probe, f"{server.url}/health", 200)
            for task in streams:
                task.cancel()
    timings.sort()
    p50, p99 = timings[len(timings) // 2], timings[int(len(timings) * 0.99)]
    print(f"\n/health with 32 streams decoding: p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")
    assert running == 32
    assert p99 < 2.0  # very loose on purpose (shared CI cores): a blocked loop takes longer


def _probe(url: str, times: int) -> list[float]:
    timings = []
    with httpx.Client(timeout=10) as probe:
        for _ in range(times):
            started = time.perf_counter()
            assert probe.get(url).status_code == 200
            timings.append(time.perf_counter() - started)
            time.sleep(0.005)
    return timings


def _gauge(metrics: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith(name + "{")
    )
