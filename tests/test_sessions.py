"""inferd/sessions.py: the session store, over each storage (diskcache and Redis).

Every rule is tested on both storages: the store is the same code over either. Its
metadata, forks, renames and imports: test_sessions_metadata.py.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from inferd.session_disk import DiskStorage
from inferd.session_redis import RedisStorage
from inferd.sessions import SessionStore, capped
from tests import sessions_support
from tests.processes import fake_server
from tests.sessions_support import STORAGES, storage, turn

store = sessions_support.store  # the fixture: a store over each storage


@pytest.fixture(params=STORAGES)
def two_stores(request, tmp_path):
    """Two stores on one storage, as two server processes (or replicas) would have."""
    first = SessionStore(storage(request.param, request, tmp_path))
    second = SessionStore(
        DiskStorage(tmp_path / "sessions")
        if request.param == "diskcache"
        else RedisStorage(request.getfixturevalue("redis_url"))
    )
    yield first, second
    first.close()
    second.close()


def test_new_ids_are_unique_and_unguessable():
    ids = [SessionStore.new_id() for _ in range(100)]
    assert len(set(ids)) == 100
    # Version-4 UUIDs: 122 bits from os.urandom, so an id cannot be guessed from another.
    assert all(uuid.UUID(session_id).version == 4 for session_id in ids)


def test_ensure_creates_an_empty_session(store):
    session = store.ensure("s", owner=None, system_prompt=None)
    assert session is not None
    assert session.messages == []
    assert store.get("s").messages == []
    assert store.ids() == ["s"]


def test_ensure_stores_the_system_prompt_first_and_replaces_it(store):
    store.ensure("s", None, "first rules")
    store.append("s", turn(1))
    store.ensure("s", None, "second rules")
    messages = store.get("s").messages
    assert messages[0] == {"role": "system", "content": "second rules"}
    assert messages[1:] == turn(1)


def test_ensure_without_a_system_prompt_keeps_the_stored_one(store):
    store.ensure("s", None, "rules")
    store.ensure("s", None, None)
    assert store.get("s").messages == [{"role": "system", "content": "rules"}]


def test_a_late_system_prompt_is_inserted_before_the_history(store):
    store.append("s", turn(1))
    store.ensure("s", None, "rules")
    assert store.get("s").messages == [{"role": "system", "content": "rules"}, *turn(1)]


def test_append_keeps_order_and_recreates_a_deleted_session(store):
    store.append("s", turn(1))
    store.append("s", turn(2))
    assert store.get("s").messages == turn(1) + turn(2)
    assert store.delete("s")
    store.append("s", turn(3))
    assert store.get("s").messages == turn(3)


def test_a_turn_is_not_stored_in_a_session_deleted_since_it_began(store):
    # An answer still streaming when its session is deleted must not bring it back.
    store.append("old", turn(1))
    began_old = store.ensure("old", None, None).created
    began_new = store.ensure("new", None, None).created  # the turn made this session
    assert store.delete("old") and store.delete("new")
    assert not store.append("old", turn(2), created=began_old)
    assert not store.append("new", turn(1), created=began_new)
    assert store.get("old") is None and store.get("new") is None
    assert store.ids() == []


def test_a_turn_is_not_stored_in_a_session_made_anew_under_its_id(store):
    began = store.ensure("s", None, None).created
    assert store.delete("s")
    store.append("s", turn(9))  # another chat makes a new session "s"
    assert not store.append("s", turn(1), created=began)
    assert store.get("s").messages == turn(9)


def test_a_turn_is_stored_in_its_session_whatever_else_changed_it(store):
    began = store.ensure("s", None, None).created
    store.append("s", turn(1))
    store.rename("s", "renamed")
    assert store.rollback("s", 1) == 1
    assert store.append("s", turn(2), created=began)
    assert store.get("s").messages == turn(1)[:1] + turn(2)
    assert not store.append("s", turn(3), "mallory", created=began)  # not another owner's


@pytest.mark.parametrize("kind", STORAGES)
def test_ensure_renews_the_ttl_of_the_session_a_turn_begins_on(kind, request, tmp_path):
    store = SessionStore(storage(kind, request, tmp_path, ttl=0.6))
    store.append("s", turn(1))
    time.sleep(0.4)
    began = store.ensure("s", None, None).created  # a new turn begins: 0.6 s more
    time.sleep(0.4)
    assert store.append("s", turn(2), created=began)
    assert store.get("s").messages == turn(1) + turn(2)
    store.close()


def test_concurrent_appends_from_many_threads_never_lose_a_message(store):
    store.ensure("s", None, None)

    def worker(first: int) -> None:
        for number in range(first, first + 10):
            store.append("s", turn(number))

    threads = [threading.Thread(target=worker, args=(n * 10,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    messages = store.get("s").messages
    assert len(messages) == 8 * 10 * 2
    # Every exchange arrived whole: a user message is always followed by its answer.
    for user, assistant in zip(messages[::2], messages[1::2], strict=True):
        assert user["content"].replace("question", "answer") == assistant["content"]


def test_two_stores_on_one_storage_share_sessions(two_stores):
    # Several server processes (or a restart) see the same history.
    first, second = two_stores
    first.append("s", turn(1))
    assert second.get("s").messages == turn(1)
    second.append("s", turn(2))
    assert first.get("s").messages == turn(1) + turn(2)


def test_concurrent_appends_from_two_stores_never_lose_a_message(two_stores):
    # Two replicas writing one session at once: each change is one atomic transaction.
    first, second = two_stores
    first.ensure("s", None, None)

    def worker(store: SessionStore, first_number: int) -> None:
        for number in range(first_number, first_number + 25):
            store.append("s", turn(number))

    threads = [
        threading.Thread(target=worker, args=(store, n * 25))
        for n, store in enumerate([first, second, first, second])
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    messages = first.get("s").messages
    assert len(messages) == 4 * 25 * 2
    assert sorted(m["content"] for m in messages[::2]) == sorted(
        f"question {n}" for n in range(100)
    )


def test_a_session_store_can_be_given_a_directory(tmp_path):
    store = SessionStore(tmp_path / "sessions")  # diskcache, as before storages existed
    try:
        store.append("s", turn(1))
        assert store.get("s").messages == turn(1)
    finally:
        store.close()


def test_rollback_removes_the_last_messages(store):
    store.append("s", turn(1) + turn(2))
    assert store.rollback("s", 1) == 3
    assert store.get("s").messages == [*turn(1), turn(2)[0]]
    assert store.rollback("s", 2) == 1
    assert store.rollback("s", 10) == 0
    assert store.get("s").messages == []


def test_rollback_and_delete_of_a_missing_session(store):
    assert store.rollback("missing", 1) is None
    assert store.delete("missing") is False
    assert store.get("missing") is None


def test_ids_are_oldest_first(store):
    for session_id in ("c", "a", "b"):
        store.ensure(session_id, None, None)
    assert store.ids() == ["c", "a", "b"]
    assert store.count() == 3


def test_sessions_of_another_owner_look_missing(store):
    assert store.ensure("mine", "alice", None) is not None
    store.append("mine", turn(1), "alice")
    assert store.get("mine", "bob") is None
    assert store.ids("bob") == []
    assert store.delete("mine", "bob") is False
    assert store.rollback("mine", 1, "bob") is None
    assert store.ensure("mine", "bob", "take over") is None
    assert store.get("mine", "alice").messages == turn(1)
    assert store.ids("alice") == ["mine"]


def test_sessions_made_without_auth_belong_to_no_key(store):
    store.ensure("open", None, None)
    assert store.get("open", "alice") is None
    assert store.ids("bob") == []
    assert store.ensure("open", "alice", None) is None  # no key can take it over
    assert store.rollback("open", 1, "alice") is None
    assert store.delete("open", "alice") is False
    assert store.get("open") is not None  # still there for the no-auth setup
    assert store.fork("open", 0, "alice") is None
    assert store.rename("open", "mine now", "alice") is None


@pytest.mark.parametrize("kind", STORAGES)
def test_sessions_expire_after_ttl_without_a_new_turn(kind, request, tmp_path):
    store = SessionStore(storage(kind, request, tmp_path, ttl=0.3))
    try:
        store.append("old", turn(1))
        store.append("renewed", turn(1))
        time.sleep(0.2)
        store.append("renewed", turn(2))  # a new turn renews the session
        time.sleep(0.2)
        assert store.get("old") is None
        assert store.get("renewed").messages == turn(1) + turn(2)
        assert store.ids() == ["renewed"]
        assert store.count() == 1  # live sessions, not every one ever made
    finally:
        store.close()


def test_without_ttl_sessions_never_expire(store):
    store.append("s", turn(1))
    assert store.count() == 1


@pytest.mark.parametrize("kind", STORAGES)
def test_max_messages_drops_the_oldest_turns_but_never_the_system_prompt(kind, request, tmp_path):
    store = SessionStore(storage(kind, request, tmp_path), max_messages=5)
    try:
        store.ensure("s", None, "rules")
        for number in range(1, 5):
            store.append("s", turn(number))
        messages = store.get("s").messages
        assert messages == [{"role": "system", "content": "rules"}, *turn(3), *turn(4)]
    finally:
        store.close()


def test_capped_history_starts_with_a_user_message():
    system = {"role": "system", "content": "rules"}
    history = [system, *turn(1), *turn(2)]
    # Three messages fit after the system prompt: a lone answer would lead, so it goes too.
    assert capped(history, 4) == [system, *turn(2)]
    assert capped(turn(1) + turn(2), 3) == turn(2)
    assert capped(history, 10) is history


def test_a_directory_gets_diskcache_with_the_given_ttl_and_a_storage_brings_its_own(tmp_path):
    store = SessionStore(tmp_path / "sessions", ttl=0.1)  # as before storages existed
    try:
        store.append("s", turn(1))
        time.sleep(0.2)
        assert store.get("s") is None
    finally:
        store.close()
    with pytest.raises(TypeError, match="give the storage its ttl"):
        SessionStore(DiskStorage(tmp_path / "other"), ttl=1)


SESSIONS_CONFIG = """
[sessions]
path = "sessions"
ttl = {ttl}

{auth}

[[models]]
id = "fake"
name = "fake/model"
path = "/x"
"""


def _serve(tmp_path: Path, ttl: float = 3600, auth: str = ""):
    config = tmp_path / "config.toml"
    config.write_text(SESSIONS_CONFIG.format(ttl=ttl, auth=auth))
    return fake_server(config, tmp_path / "server.log")


def _sessions_active(base: str, headers: dict[str, str] | None = None) -> float:
    for line in httpx.get(f"{base}/metrics", headers=headers).text.splitlines():
        if line.startswith("sessions_active "):
            return float(line.split()[1])
    raise AssertionError("no sessions_active in /metrics")


def test_a_server_expires_idle_sessions_and_counts_only_live_ones(tmp_path):
    with _serve(tmp_path, ttl=1) as server:
        server.wait_ready()
        body = {"model-name": "fake", "prompt": "Hi", "session-id": "brief"}
        assert httpx.post(f"{server.url}/chat/completions", json=body).status_code == 200
        assert httpx.get(f"{server.url}/chat/history/brief").status_code == 200
        assert _sessions_active(server.url) == 1
        time.sleep(1.3)
        assert httpx.get(f"{server.url}/chat/history/brief").status_code == 404
        assert httpx.get(f"{server.url}/sessions").json() == []
        assert _sessions_active(server.url) == 0


def test_sessions_made_before_auth_was_on_belong_to_no_key(tmp_path):
    body = {"model-name": "fake", "prompt": "Hi", "session-id": "from-before"}
    with _serve(tmp_path) as server:
        server.wait_ready()
        assert httpx.post(f"{server.url}/chat/completions", json=body).status_code == 200
    key = {"Authorization": "Bearer k1"}
    auth = '[auth]\nenabled = true\napi_keys = ["k1"]\npublic_paths = ["/metrics"]'
    with _serve(tmp_path, auth=auth) as server:
        server.wait_ready()
        base = server.url
        assert httpx.get(f"{base}/sessions", headers=key).json() == []
        assert httpx.get(f"{base}/chat/history/from-before", headers=key).status_code == 404
        rollback = httpx.post(f"{base}/chat/history/from-before/rollback", headers=key)
        assert rollback.status_code == 404
        assert httpx.delete(f"{base}/chat/history/from-before", headers=key).status_code == 404
        # Nor can a key take it over by naming it.
        taken = httpx.post(f"{base}/chat/completions", json=body, headers=key)
        assert taken.status_code == 404
        assert _sessions_active(base) == 1  # it is still stored, untouched
