"""Real server processes for tests: `inferd serve`, or the same with FakeBackend (and,
through tests/servers.py, redis-server, mlx-lm's server and nginx).

A process-level test (signals, drain, slow clients, exit codes) needs a server in its
own process; these helpers start one on a free port, wait until it is ready, and make
sure it is gone afterwards whatever the test did.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """`command` on `port` (a free one by default), given as `--port N` unless the
    command takes its port some other way (`port_option=False`)."""

    def __init__(
        self,
        command: list[str],
        log: Path,
        *,
        port: int | None = None,
        env: dict[str, str] | None = None,
        port_option: bool = True,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        if port_option:
            command = [*command, "--port", str(self.port)]
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
            )

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_until(self, ready: Callable[[], bool], timeout: float = 60) -> None:
        """Until `ready()` is true (connection errors count as not yet)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"server exited early:\n{self.log_text()}"
            try:
                if ready():
                    return
            except (httpx.TransportError, OSError):
                pass
            time.sleep(0.05)
        raise AssertionError(f"server not ready after {timeout} s:\n{self.log_text()}")

    def wait_ready(self, timeout: float = 60, path: str = "/readiness") -> None:
        """Until `path` answers 200 (the preloaded models are loaded)."""
        self.wait_until(
            lambda: httpx.get(f"{self.url}{path}", timeout=1).status_code == 200, timeout
        )

    def wait_listening(self, timeout: float = 60) -> None:
        """Until the port accepts connections (whatever /readiness says)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"server exited early:\n{self.log_text()}"
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"server not listening after {timeout} s:\n{self.log_text()}")

    def exit_code(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"server still running after {timeout} s:\n{self.log_text()}"
            ) from None

    def kill(self) -> None:
        """SIGKILL: no drain, no flush."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM, then SIGKILL if it is still running after `timeout` seconds."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()


@contextmanager
def inferd_serve(config: Path, log: Path) -> Iterator[ServerProcess]:
    """`inferd serve --config CONFIG` (real backends)."""
    server = ServerProcess(
        [sys.executable, "-m", "inferd.cli", "serve", "--config", str(config)], log
    )
    try:
        yield server
    finally:
        server.kill()


@contextmanager
def fake_server(config: Path, log: Path, *options: str) -> Iterator[ServerProcess]:
    """The same server process serving FakeBackend (inferd.testing.server)."""
    command = [sys.executable, "-m", "inferd.testing.server", str(config), *options]
    server = ServerProcess(command, log)
    try:
        yield server
    finally:
        server.kill()


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
