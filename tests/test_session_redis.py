"""inferd/session_redis.py: what only the Redis storage has to get right -- a lost
EXEC reply, an unreachable server. (The session rules run on it in test_sessions*.py.)"""

from __future__ import annotations

import pytest
import redis

from inferd.app import create_app
from inferd.config import parse_config
from inferd.session_io import AsyncSessionStore, StoreUnavailable
from inferd.session_redis import RedisStorage
from inferd.sessions import SessionStore
from inferd.testing import live_server
from tests.processes import free_port
from tests.sessions_support import turn


def test_a_redis_write_whose_reply_was_lost_is_not_applied_twice(empty_redis, monkeypatch):
    # redis-py reports a connection lost during EXEC as a WatchError, like a conflict;
    # the write may have landed all the same, and a turn must not be stored twice.
    execute = redis.client.Pipeline.execute
    lost = []

    def execute_then_lose_the_reply(self, *args, **kwargs):
        result = execute(self, *args, **kwargs)
        if not lost:
            lost.append(True)
            raise redis.WatchError("A ConnectionError occurred while watching one or more keys")
        return result

    store = SessionStore(RedisStorage(empty_redis))
    monkeypatch.setattr(redis.client.Pipeline, "execute", execute_then_lose_the_reply)
    store.append("s", turn(1))
    assert lost == [True]
    assert store.get("s").messages == turn(1)
    store.close()


async def test_an_unreachable_redis_is_a_503_not_a_hang():
    dead = f"redis://127.0.0.1:{free_port()}/0"
    sessions = AsyncSessionStore(SessionStore(RedisStorage(dead, timeout=1)), timeout=3)
    try:
        with pytest.raises(StoreUnavailable, match="the session store failed"):
            await sessions.get("s")
    finally:
        await sessions.close()


async def test_a_server_does_not_start_without_its_redis(tmp_path):
    config = parse_config({"sessions": {"url": f"redis://127.0.0.1:{free_port()}/0"}})
    with pytest.raises(RuntimeError, match="sessions: the store cannot be reached"):
        async with live_server(create_app(config)):
            pass
