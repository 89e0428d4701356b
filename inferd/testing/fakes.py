"""A fake backend and app builder for fast route tests: no model, deterministic text.

The fake tokeniser is one token per character (token id = code point), so prompt
lengths are easy to reason about, and the fake model "answers" by spelling out a fixed
reply, one character per step, then an end-of-sequence token.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sanic import Sanic

from inferd.app import create_app
from inferd.backends.base import BackendError, ChatMessage, ModelInfo, SamplingParams
from inferd.backends.chat_template import render_plain_chat
from inferd.config import ModelConfig, parse_config

EOS = 0
REPLY = "Hello there!\nHow can I help?"


class FakeDecoding:
    def __init__(self, backend: FakeBackend, params: SamplingParams) -> None:
        self.backend = backend
        self.position = 0
        self.closed = False

    def step(self) -> int:
        self.backend.steps += 1
        if self.backend.step_delay:
            time.sleep(self.backend.step_delay)
        if self.backend.fail_after is not None and self.position >= self.backend.fail_after:
            raise BackendError("fake failure")  # a failure the backend reports to users
        reply = self.backend.reply
        token = (
            ord(reply[self.position % len(reply)])
            if self.backend.endless or self.position < len(reply)
            else EOS
        )
        self.position += 1
        return token

    def close(self) -> None:
        self.closed = True
        self.backend.closed += 1


class FakeBackend:
    """Spells out `reply`; knobs for slow steps, endless output and failures."""

    def __init__(
        self,
        *,
        context_length: int = 256,
        reply: str = REPLY,
        step_delay: float = 0.0,
        endless: bool = False,
        fail_after: int | None = None,
        load_error: str | None = None,
        load_delay: float = 0.0,
    ) -> None:
        self.context_length = context_length
        self.reply = reply
        self.step_delay = step_delay
        self.endless = endless
        self.fail_after = fail_after
        self.load_error = load_error
        self.load_delay = load_delay
        self.steps = 0
        self.closed = 0  # decodings closed
        self.closed_on: list[str] = []  # threads that closed the backend itself
        self.threads: set[str] = set()
        self.prompts: list[list[int]] = []

    def load(self) -> ModelInfo:
        self.threads.add(threading.current_thread().name)
        if self.load_delay:
            time.sleep(self.load_delay)
        if self.load_error:
            raise RuntimeError(self.load_error)
        return ModelInfo(self.context_length, frozenset({EOS}), has_chat_template=False)

    def encode_text(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def encode_chat(self, messages: Sequence[ChatMessage]) -> list[int]:
        return self.encode_text(render_plain_chat(messages))

    def decode(self, token_ids: Sequence[int]) -> str:
        return "".join(chr(t) for t in token_ids if t != EOS)

    def close(self) -> None:
        """The owner thread's last call as it stops (engine.py), as MlxBackend.close()."""
        self.closed_on.append(threading.current_thread().name)

    def start(self, prompt_ids: Sequence[int], params: SamplingParams) -> FakeDecoding:
        self.threads.add(threading.current_thread().name)
        self.prompts.append(list(prompt_ids))
        return FakeDecoding(self, params)


def fake_config(tmp_path: Path, **sections: Any) -> dict[str, Any]:
    """A config document with one fake model ("fake/model", id "fake") and temp sessions.

    The model loads on first use (preload = false), so a test that sends no generation
    request starts no owner thread; pass `models=[...]` to preload.
    """
    model = {"id": "fake", "name": "fake/model", "path": "/nonexistent/fake", "preload": False}
    data: dict[str, Any] = {
        "sessions": {"path": str(tmp_path / "sessions")},
        "server": {"keepalive_interval": 0.2},
        "models": [model],
    }
    for key, value in sections.items():
        data[key] = value
    return data


def make_app(tmp_path: Path, backend: FakeBackend | None = None, **sections: Any) -> Sanic:
    """A Sanic app serving FakeBackend(s); `backend` is shared by every (model, device).

    `sections` are config tables by name, e.g. `plugins={"enabled": ["metrics", "mine"]},
    mine={"threshold": 3}`; the model is "fake/model" (id "fake") on "cpu" or "cuda",
    sessions live under `tmp_path`, and relative paths in plugin tables resolve against
    `tmp_path` (where a config file would be).
    """
    backend = backend or FakeBackend()
    config = parse_config(fake_config(tmp_path, **sections), source=tmp_path / "config.toml")

    def factory(model: ModelConfig, device: str) -> FakeBackend:
        return backend

    app = create_app(config, backend_factory=factory, devices=("cpu", "cuda"))
    # sanic-testing's asgi_client starts the app on every request, and TouchUp (a
    # micro-optimisation that recompiles Sanic's own methods) costs ~0.1 s each time.
    app.config.TOUCHUP = False
    app.ctx.fake_backend = backend
    return app


async def settle(app: Sanic, timeout: float = 5.0) -> None:
    """Wait until the plugins' `async def` lifecycle hooks have run (they run in the
    background, after the events they observe)."""
    await app.ctx.plugins.background.drain(timeout)
