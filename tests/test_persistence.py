"""Session history survives a hard kill (SIGKILL) of a real `inferd serve` process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_server(config: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "inferd.cli", "serve", "--config", str(config)]
    command += ["--port", str(port)]
    with log.open("ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)


def _wait_ready(base: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, f"server exited early:\n{log.read_text()}"
        try:
            if httpx.get(f"{base}/readiness", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"server not ready after 60 s:\n{log.read_text()}")


def _chat(base: str, session: str, prompt: str) -> str:
    body = {"model-name": "stories", "prompt": prompt, "session-id": session}
    body |= {"max-token": 8, "temperature": 0}
    response = httpx.post(f"{base}/chat/completions", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return response.text


@pytest.mark.real_model
def test_history_survives_kill_9(tmp_path: Path, stories_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        f"""
[sessions]
path = "sessions"

[[models]]
id = "stories"
name = "stories260K"
path = "{stories_path}"
preload = true
"""
    )
    log = tmp_path / "server.log"
    port = _free_port()
    base = f"http://127.0.0.1:{port}"

    server = _start_server(config, port, log)
    try:
        _wait_ready(base, server, log)
        _chat(base, "durable", "Once upon a time")
        _chat(base, "durable", "The end")
        before = httpx.get(f"{base}/chat/history/durable").json()
    finally:
        os.kill(server.pid, signal.SIGKILL)
        server.wait()
    assert [m["role"] for m in before] == ["user", "assistant", "user", "assistant"]

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = _start_server(config, port, log)
    try:
        _wait_ready(base, server, log)
        after = httpx.get(f"{base}/chat/history/durable").json()
        assert httpx.get(f"{base}/sessions").json() == ["durable"]
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
            raise AssertionError(f"server ignored SIGTERM for 30 s:\n{log.read_text()}") from None
    assert after == before
    assert (tmp_path / "sessions").is_dir()  # resolved against the config file's folder
