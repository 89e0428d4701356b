"""The servers a benchmark run starts: inferd (`inferd serve --config`) and mlx_lm.server.

Each is a subprocess on 127.0.0.1 with its log in the run's folder. `ServerProcess` is
a context manager that always stops what it started (also on Ctrl-C or a failure), and
on Linux the kernel ends it too if the benchmark itself is killed.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

# inferd's [[models]] id/name in the generated config; requests name the model by it.
MODEL_ID = "bench"


class ServerFailed(Exception):
    """A server exited or reported a failure before it was ready; the message says why."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _toml_value(value: object) -> str:
    """A TOML literal for a str, bool, int or float (JSON's syntax is TOML's for these)."""
    if isinstance(value, (str, bool, int, float)):
        return json.dumps(value)
    raise TypeError(f"no TOML literal for {value!r}")


def inferd_config(
    model_dir: Path,
    *,
    quantization: str | None,
    device: str,
    max_concurrent: int,
    sessions_dir: Path,
    model_options: Mapping[str, str] | None = None,
) -> str:
    """The TOML of a one-model inferd config: no plugins, so only the engine is measured.

    `model_options` are extra raw TOML assignments for the [[models]] table (for engine
    settings this script does not know about, e.g. {"threads": "2"}).
    """
    lines = [
        "[server]",
        'host = "127.0.0.1"',
        "[sessions]",
        f"path = {_toml_value(str(sessions_dir))}",
        "[plugins]",
        "enabled = []",
        "[[models]]",
        f"id = {_toml_value(MODEL_ID)}",
        f"name = {_toml_value(MODEL_ID)}",
        f"path = {_toml_value(str(model_dir))}",
        f"device = {_toml_value(device)}",
        "preload = true",
        f"max_concurrent = {max_concurrent}",
    ]
    if quantization is not None:
        lines.append(f"quantization = {_toml_value(quantization)}")
    lines += [f"{key} = {value}" for key, value in (model_options or {}).items()]
    return "\n".join(lines) + "\n"


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: SIGTERM this server when the benchmark process dies, even by SIGKILL."""
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class ServerProcess:
    """A server subprocess: started by __enter__ (returns once it is ready), stopped by __exit__."""

    def __init__(
        self,
        label: str,
        command: Sequence[str],
        port: int,
        ready_path: str,
        log_path: Path,
        start_timeout: float,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.label = label
        self.command = list(command)
        self.base_url = f"http://127.0.0.1:{port}"
        self.ready_path = ready_path
        self.log_path = log_path
        self.start_timeout = start_timeout
        self.env = {**os.environ, **(env or {})}
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def start(self) -> ServerProcess:
        """Start the server and return once it is ready (stopped again if it never is)."""
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,  # we stop it ourselves, in order, not the terminal's ^C
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ServerFailed(
                    f"{self.label} exited with code {self._process.returncode}: {self.log_tail()}"
                )
            try:
                reply = httpx.get(self.base_url + self.ready_path, timeout=2)
            except httpx.HTTPError:
                reply = None
            if reply is not None and reply.status_code == 200:
                return
            if reply is not None and _readiness_failed(reply):
                raise ServerFailed(f"{self.label} failed to load: {reply.text.strip()}")
            time.sleep(0.3)
        raise ServerFailed(f"{self.label} not ready after {self.start_timeout:.0f} s")

    def log_tail(self, lines: int = 3) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(text[-lines:]) or "(empty log)"

    def stop(self, timeout: float = 15.0) -> int | None:
        """Ask the server to stop (SIGTERM), wait up to `timeout`, then kill it; safe to
        call twice. Returns its exit code: None if it had to be killed or never ran."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return None if process is None else process.returncode
        process.terminate()
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)
            return None


def _readiness_failed(reply: httpx.Response) -> bool:
    """inferd's /readiness says "failed" (a preload failed) rather than "loading"."""
    try:
        return reply.json().get("status") == "failed"
    except (ValueError, AttributeError):
        return False


def inferd_server(
    workdir: Path,
    label: str,
    config_text: str,
    start_timeout: float,
    env: Mapping[str, str] | None = None,
) -> ServerProcess:
    config = workdir / f"{label}.toml"
    config.write_text(config_text)
    port = free_port()
    command = [sys.executable, "-m", "inferd.cli", "serve", "--config", str(config)]
    command += ["--port", str(port)]
    log = workdir / f"{label}.log"
    return ServerProcess(label, command, port, "/readiness", log, start_timeout, env)


def mlx_lm_server(
    workdir: Path, model_dir: Path, start_timeout: float, max_concurrent: int
) -> ServerProcess:
    """`python -m mlx_lm server --model DIR`: requests must name the model by that path."""
    port = free_port()
    command = [sys.executable, "-m", "mlx_lm", "server", "--model", str(model_dir)]
    command += ["--port", str(port), "--decode-concurrency", str(max_concurrent)]
    command += ["--log-level", "WARNING"]
    log = workdir / "mlx_lm.log"
    return ServerProcess("mlx_lm.server", command, port, "/health", log, start_timeout)
