"""inferd/session_io.py: the session store runs off the event loop, and a locked or
failing store gives a clear 503 -- never a hang, never lost history."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest

from inferd.session_io import AsyncSessionStore, StoreUnavailable, offloaded
from inferd.sessions import SessionStore
from inferd.testing.fakes import make_app
from inferd.testing.live import live_server
from tests.processes import fake_server


class RecordingStore(SessionStore):
    """A real store that notes the thread of every call (and can be made to stall)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.threads: list[str] = []
        self.release = threading.Event()
        self.release.set()

    def get(self, session_id, owner=None):
        self.threads.append(threading.current_thread().name)
        self.release.wait(10)
        return super().get(session_id, owner)

    def append(self, session_id, messages, owner=None, *, created=None):
        self.threads.append(threading.current_thread().name)
        self.release.wait(10)
        return super().append(session_id, messages, owner, created=created)

    def ensure(self, session_id, owner, system_prompt):
        self.threads.append(threading.current_thread().name)
        return super().ensure(session_id, owner, system_prompt)

    def ids(self, owner=None):
        self.threads.append(threading.current_thread().name)
        return super().ids(owner)

    def shout(self, session_id: str) -> str:
        """A method added later: the facade wraps it in one line."""
        return session_id.upper()


class ShoutingSessions(AsyncSessionStore):
    shout = offloaded(RecordingStore.shout)  # type: ignore[arg-type]


async def test_no_store_call_runs_on_the_event_loop_thread(tmp_path):
    """Every session read and write of a chat, its history and the session list."""
    app = make_app(tmp_path)
    store = RecordingStore(tmp_path / "recorded")
    app.ctx.sessions = AsyncSessionStore(store, timeout=5)
    async with live_server(app) as url, httpx.AsyncClient(base_url=url) as client:
        loop_thread = threading.current_thread().name
        for _ in range(2):
            body = {"model-name": "fake", "prompt": "Hi", "session-id": "s"}
            assert (await client.post("/chat/completions", json=body)).status_code == 200
        assert (await client.get("/chat/history/s")).status_code == 200
        assert (await client.get("/sessions")).json() == ["s"]
    assert len(store.threads) >= 6  # get, ensure, append per turn; then get, ids
    assert loop_thread not in store.threads
    assert {name.split("_")[0] for name in store.threads} == {"inferd-sessions"}


async def test_a_stalled_store_gives_503_after_the_timeout_and_keeps_the_write(tmp_path):
    store = RecordingStore(tmp_path / "s")
    sessions = AsyncSessionStore(store, timeout=0.2)
    store.release.clear()  # the store stalls, as a locked SQLite file does
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match=r"busy \(no answer within 0.2 s\)") as error:
        await sessions.append("s", [{"role": "user", "content": "kept"}])
    assert error.value.status == 503
    assert error.value.headers == {"Retry-After": "1"}
    assert time.monotonic() - started < 5  # bounded: no hang
    with pytest.raises(StoreUnavailable):
        await sessions.get("s")  # a read behind it gives up too
    store.release.set()
    await sessions.close()
    # The write nobody waited for still landed; the abandoned read never ran.
    reopened = SessionStore(tmp_path / "s")
    assert reopened.get("s").messages == [{"role": "user", "content": "kept"}]
    reopened.close()
    assert store.threads.count("inferd-sessions_0") == 1  # only the append ran


async def test_a_failing_store_gives_503_not_500(tmp_path):
    class Broken(SessionStore):
        def get(self, session_id, owner=None):
            raise sqlite3.DatabaseError("database disk image is malformed")

    sessions = AsyncSessionStore(Broken(tmp_path / "b"), timeout=1)
    with pytest.raises(StoreUnavailable, match="failed"):
        await sessions.get("s")
    await sessions.close()


async def test_a_new_store_method_is_one_line_to_wrap(tmp_path):
    sessions = ShoutingSessions(RecordingStore(tmp_path / "x"), timeout=1)
    assert await sessions.shout("abc") == "ABC"
    await sessions.close()


async def test_calls_run_in_the_order_they_were_made(tmp_path):
    """A turn's write is followed by the next turn's read: it must see it."""
    sessions = AsyncSessionStore(SessionStore(tmp_path / "o"), timeout=5)
    write = asyncio.ensure_future(sessions.append("s", [{"role": "user", "content": "1"}]))
    read = asyncio.ensure_future(sessions.get("s"))
    await write
    assert (await read).messages == [{"role": "user", "content": "1"}]
    await sessions.close()


def _lock(database: Path) -> sqlite3.Connection:
    """Hold SQLite's write lock on the store, as another process might."""
    connection = sqlite3.connect(database, isolation_level=None)
    connection.execute("BEGIN EXCLUSIVE")
    return connection


async def test_a_locked_store_in_a_real_server_gives_503_and_loses_nothing(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(
        '[sessions]\npath = "sessions"\ntimeout = 0.5\n\n'
        '[[models]]\nid = "fake"\nname = "fake/model"\npath = "/x"\n'
    )
    body = {"model-name": "fake", "prompt": "Hi", "session-id": "precious"}
    with fake_server(config, tmp_path / "server.log") as server:
        await asyncio.to_thread(server.wait_ready)
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            assert (await client.post("/chat/completions", json=body)).status_code == 200
            before = (await client.get("/chat/history/precious")).json()

            lock = _lock(tmp_path / "sessions" / "cache.db")
            started = time.monotonic()
            refused = await client.post("/chat/completions", json=body)
            refused_after = time.monotonic() - started
            health = await client.get("/health")  # the event loop is not stuck
            stateless = await client.post("/completions", json={"model": "fake", "prompt": "x"})
            lock.rollback()
            lock.close()

            again = await client.post("/chat/completions", json=body)
            after = (await client.get("/chat/history/precious")).json()

    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert "session store is busy" in refused.json()["error"]
    print(f"\nlocked store answered 503 after {refused_after * 1000:.0f} ms")
    assert refused_after < 10  # bounded by [sessions] timeout, not a hang
    assert health.status_code == 200 and stateless.status_code == 200
    assert again.status_code == 200
    assert after[:2] == before and len(after) == 4  # nothing stored was lost
