"""Session history survives a hard kill (SIGKILL) of a real `inferd serve` process."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest

from tests.processes import inferd_serve


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

    with inferd_serve(config, log) as server:
        server.wait_ready()
        _chat(server.url, "durable", "Once upon a time")
        _chat(server.url, "durable", "The end")
        before = httpx.get(f"{server.url}/chat/history/durable").json()
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait()
    assert [m["role"] for m in before] == ["user", "assistant", "user", "assistant"]

    with inferd_serve(config, log) as server:
        server.wait_ready()
        after = httpx.get(f"{server.url}/chat/history/durable").json()
        assert httpx.get(f"{server.url}/sessions").json() == ["durable"]
        server.process.terminate()
        assert server.exit_code(timeout=30) == 0
    assert after == before
    assert (tmp_path / "sessions").is_dir()  # resolved against the config file's folder
