"""docs/deploy.md's recipe, run: Redis, two inferd replicas on deploy/inferd.toml in front
of a remote engine, and nginx on deploy/nginx.conf in front of them.

The files under deploy/ are the ones the guide shows; only hosts and ports are pointed
at the servers started here (and the rate limit lowered, so a test can reach it). The
upstream engine is a real `inferd serve` of stories260K, under the name vLLM would give
the guide's model.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis
from websockets.sync.client import connect

from inferd.testing import parse_sse
from tests.processes import ServerProcess, free_port
from tests.servers import missing, redis_server, replica, start_redis

DEPLOY = Path(__file__).parents[1] / "deploy"
KEY = "deploy-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
LIMITED_KEY = "rate-limit-test-key"  # used by one test only: the others do not count
KEYS = {"INFERD_API_KEYS": f"{KEY},{LIMITED_KEY}"}
LIMIT = 60  # requests per minute, lowered from the guide's 600 so a test can reach it

pytestmark = pytest.mark.real_model


def _replace(text: str, old: str, new: str) -> str:
    """`text` with `old` replaced; fails when the file no longer says `old` (the guide
    and this test must be changed together)."""
    assert old in text, f"deploy file no longer contains {old!r}"
    return text.replace(old, new)


def render_inferd_config(redis_url: str, upstream: str) -> str:
    text = (DEPLOY / "inferd.toml").read_text()
    text = _replace(text, 'host = "0.0.0.0"', 'host = "127.0.0.1"')
    text = _replace(text, "redis://redis:6379", redis_url.removesuffix("/0"))
    text = _replace(text, "requests_per_minute = 600", f"requests_per_minute = {LIMIT}")
    urls = re.search(r"^url = \[.*\]", text, re.MULTILINE)
    assert urls is not None, "deploy/inferd.toml no longer lists the upstreams as `url = [...]`"
    return text.replace(urls.group(0), f'url = ["{upstream}"]')


def render_nginx_config(port: int, replicas: list[int]) -> str:
    text = (DEPLOY / "nginx.conf").read_text()
    text = _replace(text, "listen 80;", f"listen 127.0.0.1:{port};")
    text = _replace(text, "server inferd-1:3000", f"server 127.0.0.1:{replicas[0]}")
    text = _replace(text, "server inferd-2:3000", f"server 127.0.0.1:{replicas[1]}")
    return text


@dataclass
class Cluster:
    folder: Path
    config: Path
    redis_url: str
    ports: list[int]
    replicas: list[ServerProcess]
    nginx: str | None  # the load balancer's base URL, None without nginx
    restarted: list[ServerProcess]  # servers a test started again, stopped with the cluster

    def base(self, replica: int) -> str:
        return f"http://127.0.0.1:{self.ports[replica]}"

    def restart(self, replica: int) -> None:
        self.replicas[replica].stop()
        log = self.folder / f"replica-{replica}.log"
        self.replicas[replica] = replica_of(self.config, log, self.ports[replica])


def _upstream(folder: Path, stories: Path) -> Iterator[str]:
    """The remote engine: inferd serving stories260K under the guide's model name."""
    config = folder / "upstream.toml"
    config.write_text(
        f"""
[sessions]
path = "upstream-sessions"

[[models]]
id = "stories"
name = "Qwen/Qwen2.5-7B-Instruct"
path = "{stories}"
preload = true
"""
    )
    server = replica(config, folder / "upstream.log")
    try:
        yield f"{server.url}/v1"
    finally:
        server.stop()


def _nginx(folder: Path, replicas: list[int]) -> Iterator[str | None]:
    binary = shutil.which("nginx")
    if binary is None:
        yield None
        return
    port = free_port()
    (folder / "nginx" / "logs").mkdir(parents=True)
    config = folder / "nginx" / "nginx.conf"
    config.write_text(render_nginx_config(port, replicas))
    settings = f"daemon off; pid {folder / 'nginx' / 'nginx.pid'}; error_log stderr;"
    command = [binary, "-p", str(folder / "nginx"), "-c", str(config), "-g", settings]
    server = ServerProcess(command, folder / "nginx.log", port=port, port_option=False)
    base = f"http://127.0.0.1:{port}"
    try:
        server.wait_until(lambda: httpx.get(f"{base}/health").status_code == 200)
        yield base
    finally:
        server.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, stories_path: Path) -> Iterator[Cluster]:
    folder = tmp_path_factory.mktemp("deploy")
    with redis_server(folder) as redis_url:
        upstreams = _upstream(folder, stories_path)
        upstream = next(upstreams)
        config = folder / "inferd.toml"
        config.write_text(render_inferd_config(redis_url, upstream))
        ports = [free_port(), free_port()]
        replicas = [
            replica_of(config, folder / f"replica-{n}.log", port) for n, port in enumerate(ports)
        ]
        balancers = _nginx(folder, ports)
        cluster = Cluster(folder, config, redis_url, ports, replicas, next(balancers), [])
        try:
            yield cluster
        finally:
            balancers.close()
            for server in [*cluster.replicas, *cluster.restarted]:
                server.stop()
            upstreams.close()


def replica_of(config: Path, log: Path, port: int) -> ServerProcess:
    """A replica of the guide's config, with the test's client keys."""
    return replica(config, log, port, KEYS)


def _chat(base: str, session: str, prompt: str) -> str:
    body = {"model-name": "Qwen/Qwen2.5-7B-Instruct", "prompt": prompt, "session-id": session}
    body |= {"max-token": 12, "temperature": 0, "device": "cuda"}
    response = httpx.post(f"{base}/chat/completions", json=body, headers=AUTH, timeout=60)
    assert response.status_code == 200, response.text
    return parse_sse(response.text).text


def _history(base: str, session: str) -> list[dict[str, str]]:
    response = httpx.get(f"{base}/chat/history/{session}", headers=AUTH, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def test_the_guide_config_serves_its_model_through_the_upstream(cluster):
    answer = _chat(cluster.base(0), "guide", "Once upon a time")
    assert answer.strip()
    models = httpx.get(f"{cluster.base(1)}/v1/models", headers=AUTH).json()["data"]
    assert [(m["id"], m["context_length"]) for m in models] == [
        ("Qwen/Qwen2.5-7B-Instruct", 512)  # reported by the upstream's /v1/models
    ]


def test_a_session_started_on_one_replica_continues_on_the_other(cluster):
    first = _chat(cluster.base(0), "shared", "Once upon a time")
    second = _chat(cluster.base(1), "shared", "The end")
    history = _history(cluster.base(0), "shared")
    assert history == [
        {"role": "user", "content": "Once upon a time"},
        {"role": "assistant", "content": first},
        {"role": "user", "content": "The end"},
        {"role": "assistant", "content": second},
    ]
    assert _history(cluster.base(1), "shared") == history


def test_killing_a_replica_loses_nothing(cluster):
    _chat(cluster.base(1), "durable", "Once upon a time")
    _chat(cluster.base(1), "durable", "Lily")
    before = _history(cluster.base(0), "durable")
    cluster.replicas[1].kill()  # SIGKILL: no drain, no flush
    assert _history(cluster.base(0), "durable") == before
    _chat(cluster.base(0), "durable", "The end")  # the survivor carries on
    cluster.restart(1)
    after = _history(cluster.base(1), "durable")
    assert after[:4] == before
    assert [m["role"] for m in after] == ["user", "assistant"] * 3
    assert "durable" in httpx.get(f"{cluster.base(1)}/sessions", headers=AUTH).json()


def test_sessions_survive_a_kill_of_redis_itself(cluster):
    _chat(cluster.base(0), "aof", "Once upon a time")
    before = _history(cluster.base(0), "aof")
    port = int(cluster.redis_url.rsplit(":", 1)[1].split("/")[0])
    # The guide's Redis runs with an append-only file; SIGKILL it and start it again.
    pid = redis.Redis(port=port).info("server")["process_id"]
    subprocess.run(["kill", "-9", str(pid)], check=True)
    cluster.restarted.append(start_redis(cluster.folder, port))
    after = None
    deadline = time.monotonic() + 10  # the replicas reconnect on their next call
    while after is None and time.monotonic() < deadline:
        try:
            after = _history(cluster.base(1), "aof")
        except AssertionError:
            time.sleep(0.2)
    assert after == before


def test_a_rate_limit_holds_across_both_replicas(cluster):
    headers = {"Authorization": f"Bearer {LIMITED_KEY}"}
    statuses, remaining = [], []
    for n in range(LIMIT + 2):  # alternating replicas: one count in Redis
        response = httpx.get(f"{cluster.base(n % 2)}/models", headers=headers)
        statuses.append(response.status_code)
        remaining.append(int(response.headers["X-RateLimit-Remaining"]))
    assert statuses == [200] * LIMIT + [429, 429]
    assert remaining[:LIMIT] == list(range(LIMIT - 1, -1, -1))


@pytest.fixture
def balancer(cluster) -> str:
    if cluster.nginx is None:
        missing("nginx", "apt-get install nginx-light")
    return cluster.nginx


def test_sse_through_the_load_balancer_keeps_one_session_across_replicas(balancer):
    answers = [_chat(balancer, "balanced", prompt) for prompt in ("Once", "upon", "a time")]
    history = _history(balancer, "balanced")
    assert [m["content"] for m in history if m["role"] == "assistant"] == answers


def test_websockets_pass_the_load_balancer(balancer):
    url = balancer.replace("http://", "ws://") + "/chat/ws?session-id=ws-balanced"
    with connect(url, additional_headers=AUTH) as ws:
        for prompt in ("Once upon a time", "Lily"):
            body = {"model-name": "Qwen/Qwen2.5-7B-Instruct", "prompt": prompt, "max-token": 8}
            ws.send(json.dumps({**body, "temperature": 0}))
            frames = []
            while (frame := ws.recv()) != "__END__":
                assert not frame.startswith("__ERROR__"), frame
                frames.append(frame)
            assert frames
    assert [m["role"] for m in _history(balancer, "ws-balanced")] == ["user", "assistant"] * 2
