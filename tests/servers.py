"""Servers of other projects that tests start and stop: redis-server and mlx-lm's
OpenAI server (inferd's own: tests/processes.py).

Each listens on 127.0.0.1 on a free port and is stopped when its context ends; a test
that needs a binary which is not installed skips, saying how to install it -- or fails,
where CI says the servers must be there.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.processes import ServerProcess


def missing(what: str, install: str) -> None:
    """Skip a test whose server is not installed -- or fail it where CI says the servers
    must be there (INFERD_REQUIRE_SERVERS=1, set by .ci/run)."""
    message = f"{what} is not installed ({install}; .ci/run installs it)"
    if os.environ.get("INFERD_REQUIRE_SERVERS") == "1":
        pytest.fail(message)
    pytest.skip(message)


def start_redis(folder: Path, port: int | None = None) -> ServerProcess:
    """redis-server with its append-only file in `folder`, ready for commands."""
    binary = shutil.which("redis-server")
    if binary is None:
        missing("redis-server", "apt-get install redis-server")
    import redis

    command = [binary, "--bind", "127.0.0.1", "--dir", str(folder)]
    command += ["--appendonly", "yes", "--save", ""]
    server = ServerProcess(command, folder / "redis.log", port=port)
    client = redis.Redis(port=server.port)
    try:
        server.wait_until(lambda: bool(client.ping()), timeout=20)
    finally:
        client.close()
    return server


@contextmanager
def redis_server(folder: Path) -> Iterator[str]:
    """A redis-server for the context; yields its redis:// URL."""
    server = start_redis(folder)
    try:
        yield f"redis://127.0.0.1:{server.port}/0"
    finally:
        server.stop()


@contextmanager
def mlx_lm_server(model: Path, folder: Path) -> Iterator[str]:
    """mlx-lm's OpenAI server on `model`; yields its /v1 URL. Its `model` field must be
    the resolved path of `model` (what its /v1/models lists)."""
    command = [sys.executable, "-m", "mlx_lm", "server", "--model", str(model.resolve())]
    server = ServerProcess(command, folder / "mlx_lm.log")
    try:
        server.wait_until(lambda: httpx.get(f"{server.url}/health", timeout=2).is_success)
        yield f"{server.url}/v1"
    finally:
        server.stop()


def replica(
    config: Path, log: Path, port: int | None = None, env: dict[str, str] | None = None
) -> ServerProcess:
    """`inferd serve --config <config>`, ready (its /readiness answers 200)."""
    command = [sys.executable, "-m", "inferd.cli", "serve", "--config", str(config)]
    server = ServerProcess(command, log, port=port, env=env)
    server.wait_ready()
    return server
