"""What the session store's tests share (tests/test_sessions*.py): the storages, the
`store` fixture (a store over each) and a turn of chat.

A test module takes the fixture by assignment (`store = sessions_support.store`):
imported by name, pytest would find it as well, but ruff would read each test's
parameter as redefining an unused import.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from inferd.session_disk import DiskStorage
from inferd.session_redis import RedisStorage
from inferd.sessions import SessionStorage, SessionStore

STORAGES = ["diskcache", "redis"]


def storage(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, ttl: float | None = None
) -> SessionStorage:
    if kind == "diskcache":
        return DiskStorage(tmp_path / "sessions", ttl=ttl)
    return RedisStorage(request.getfixturevalue("empty_redis"), ttl=ttl)


@pytest.fixture(params=STORAGES)
def store(request, tmp_path):
    store = SessionStore(storage(request.param, request, tmp_path))
    yield store
    store.close()


def turn(number: int) -> list[dict[str, str]]:
    return [
        {"role": "user", "content": f"question {number}"},
        {"role": "assistant", "content": f"answer {number}"},
    ]
