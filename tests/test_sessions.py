"""inferd/sessions.py: the session store, over each storage (diskcache and Redis).

Every rule is tested on both storages: the store is the same code over either.
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
from inferd.sessions import SessionStorage, SessionStore, capped
from tests.processes import fake_server

STORAGES = ["diskcache", "redis"]


def _storage(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, ttl: float | None = None
) -> SessionStorage:
    if kind == "diskcache":
        return DiskStorage(tmp_path / "sessions", ttl=ttl)
    return RedisStorage(request.getfixturevalue("empty_redis"), ttl=ttl)


@pytest.fixture(params=STORAGES)
def store(request, tmp_path):
    store = SessionStore(_storage(request.param, request, tmp_path))
    yield store
    store.close()


@pytest.fixture(params=STORAGES)
def two_stores(request, tmp_path):
    """Two stores on one storage, as two server processes (or replicas) would have."""
    first = SessionStore(_storage(request.param, request, tmp_path))
    second = SessionStore(
        DiskStorage(tmp_path / "sessions")
        if request.param == "diskcache"
        else RedisStorage(request.getfixturevalue("redis_url"))
    )
    yield first, second
    first.close()
    second.close()


def _turn(number: int) -> list[dict[str, str]]:
    return [
        {"role": "user", "content": f"question {number}"},
        {"role": "assistant", "content": f"answer {number}"},
    ]


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
    store.append("s", _turn(1))
    store.ensure("s", None, "second rules")
    messages = store.get("s").messages
    assert messages[0] == {"role": "system", "content": "second rules"}
    assert messages[1:] == _turn(1)


def test_ensure_without_a_system_prompt_keeps_the_stored_one(store):
    store.ensure("s", None, "rules")
    store.ensure("s", None, None)
    assert store.get("s").messages == [{"role": "system", "content": "rules"}]


def test_a_late_system_prompt_is_inserted_before_the_history(store):
    store.append("s", _turn(1))
    store.ensure("s", None, "rules")
    assert store.get("s").messages == [{"role": "system", "content": "rules"}, *_turn(1)]


def test_append_keeps_order_and_recreates_a_deleted_session(store):
    store.append("s", _turn(1))
    store.append("s", _turn(2))
    assert store.get("s").messages == _turn(1) + _turn(2)
    assert store.delete("s")
    store.append("s", _turn(3))
    assert store.get("s").messages == _turn(3)


def test_concurrent_appends_from_many_threads_never_lose_a_message(store):
    store.ensure("s", None, None)

    def worker(first: int) -> None:
        for number in range(first, first + 10):
            store.append("s", _turn(number))

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
    first.append("s", _turn(1))
    assert second.get("s").messages == _turn(1)
    second.append("s", _turn(2))
    assert first.get("s").messages == _turn(1) + _turn(2)


def test_concurrent_appends_from_two_stores_never_lose_a_message(two_stores):
    # Two replicas writing one session at once: each change is one atomic transaction.
    first, second = two_stores
    first.ensure("s", None, None)

    def worker(store: SessionStore, first_number: int) -> None:
        for number in range(first_number, first_number + 25):
            store.append("s", _turn(number))

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
        store.append("s", _turn(1))
        assert store.get("s").messages == _turn(1)
    finally:
        store.close()


def test_rollback_removes_the_last_messages(store):
    store.append("s", _turn(1) + _turn(2))
    assert store.rollback("s", 1) == 3
    assert store.get("s").messages == [*_turn(1), _turn(2)[0]]
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
    store.append("mine", _turn(1), "alice")
    assert store.get("mine", "bob") is None
    assert store.ids("bob") == []
    assert store.delete("mine", "bob") is False
    assert store.rollback("mine", 1, "bob") is None
    assert store.ensure("mine", "bob", "take over") is None
    assert store.get("mine", "alice").messages == _turn(1)
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


# ---- metadata, forks, renames, imports ----------------------------------------------


def test_a_new_session_records_its_times_and_no_title_or_parent(store):
    session = store.ensure("s", None, None)
    assert session.updated == session.created > 0
    assert (session.title, session.parent, session.fork_point) == (None, None, None)


def test_every_change_to_the_messages_moves_updated_on(store):
    store.ensure("s", None, None)
    times = [store.get("s").updated]
    for change in (
        lambda: store.append("s", _turn(1)),
        lambda: store.ensure("s", None, "rules"),
        lambda: store.rollback("s", 1),
    ):
        change()
        times.append(store.get("s").updated)
    assert times == sorted(times)
    assert times[-1] > times[0]
    assert store.get("s").created == store.sessions()[0].created


def test_records_written_before_the_metadata_existed_still_load(tmp_path):
    import diskcache

    with diskcache.Cache(str(tmp_path / "sessions")) as cache:
        cache.set("old", {"messages": _turn(1), "owner": None, "created": 123.0})
    store = SessionStore(tmp_path / "sessions")
    try:
        session = store.get("old")
        assert session.messages == _turn(1)
        assert session.updated == 123.0
        assert (session.title, session.parent, session.fork_point) == (None, None, None)
    finally:
        store.close()


def test_fork_copies_the_first_messages_and_records_its_parent(store):
    store.append("s", _turn(1) + _turn(2))
    child = store.fork("s", 2)
    assert child.id != "s"
    assert child.messages == _turn(1)
    assert (child.parent, child.fork_point, child.owner) == ("s", 2, None)
    assert store.get(child.id).messages == _turn(1)
    assert store.get("s").messages == _turn(1) + _turn(2)  # the parent is untouched
    store.append(child.id, _turn(3))
    assert store.get("s").messages == _turn(1) + _turn(2)


def test_fork_without_keep_copies_everything_and_keep_zero_nothing(store):
    store.append("s", _turn(1))
    assert store.fork("s", None).messages == _turn(1)
    empty = store.fork("s", 0)
    assert (empty.messages, empty.fork_point) == ([], 0)


@pytest.mark.parametrize("keep", [-1, 3, 100])
def test_fork_refuses_a_keep_outside_the_history(store, keep):
    store.append("s", _turn(1))
    with pytest.raises(ValueError, match="between 0 and 2"):
        store.fork("s", keep)
    assert store.ids() == ["s"]


def test_fork_of_a_missing_or_foreign_session_is_none(store):
    assert store.fork("missing", 0) is None
    store.append("mine", _turn(1), "alice")
    assert store.fork("mine", 1, "bob") is None
    assert store.fork("mine", 1, "alice").owner == "alice"


def test_rename_sets_and_clears_the_title_without_touching_updated(store):
    store.append("s", _turn(1))
    before = store.get("s")
    assert store.rename("s", "My chat").title == "My chat"
    after = store.get("s")
    assert after.title == "My chat"
    assert after.updated == before.updated  # a rename is not a use of the chat
    assert store.rename("s", None).title is None
    assert store.rename("missing", "x") is None


def test_create_stores_an_imported_conversation(store):
    session = store.create(_turn(1), owner="alice", title="Imported")
    assert store.get(session.id, "alice").messages == _turn(1)
    assert store.get(session.id, "alice").title == "Imported"
    assert store.get(session.id, "bob") is None


def test_sessions_lists_metadata_oldest_first(store):
    for session_id in ("c", "a", "b"):
        store.ensure(session_id, None, None)
    store.rename("a", "Named")
    sessions = store.sessions()
    assert [s.id for s in sessions] == ["c", "a", "b"]
    assert sessions[1].title == "Named"


def test_concurrent_renames_forks_and_appends_lose_nothing(store):
    store.ensure("s", None, None)
    forks: list[str] = []

    def appender() -> None:
        for number in range(20):
            store.append("s", _turn(number))

    def renamer() -> None:
        for number in range(20):
            store.rename("s", f"title {number}")

    def forker() -> None:
        for _ in range(20):
            forks.append(store.fork("s", 0).id)

    threads = [threading.Thread(target=job) for job in (appender, renamer, forker)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    session = store.get("s")
    assert len(session.messages) == 40  # no append was undone by a rename
    assert session.title == "title 19"  # nor a rename by an append
    assert len(set(forks)) == 20
    assert all(store.get(fork).parent == "s" for fork in forks)


@pytest.mark.parametrize("kind", STORAGES)
def test_sessions_expire_after_ttl_without_a_new_turn(kind, request, tmp_path):
    store = SessionStore(_storage(kind, request, tmp_path, ttl=0.3))
    try:
        store.append("old", _turn(1))
        store.append("renewed", _turn(1))
        time.sleep(0.2)
        store.append("renewed", _turn(2))  # a new turn renews the session
        time.sleep(0.2)
        assert store.get("old") is None
        assert store.get("renewed").messages == _turn(1) + _turn(2)
        assert store.ids() == ["renewed"]
        assert store.count() == 1  # live sessions, not every one ever made
    finally:
        store.close()


def test_without_ttl_sessions_never_expire(store):
    store.append("s", _turn(1))
    assert store.count() == 1


@pytest.mark.parametrize("kind", STORAGES)
def test_max_messages_drops_the_oldest_turns_but_never_the_system_prompt(kind, request, tmp_path):
    store = SessionStore(_storage(kind, request, tmp_path), max_messages=5)
    try:
        store.ensure("s", None, "rules")
        for number in range(1, 5):
            store.append("s", _turn(number))
        messages = store.get("s").messages
        assert messages == [{"role": "system", "content": "rules"}, *_turn(3), *_turn(4)]
    finally:
        store.close()


def test_capped_history_starts_with_a_user_message():
    system = {"role": "system", "content": "rules"}
    history = [system, *_turn(1), *_turn(2)]
    # Three messages fit after the system prompt: a lone answer would lead, so it goes too.
    assert capped(history, 4) == [system, *_turn(2)]
    assert capped(_turn(1) + _turn(2), 3) == _turn(2)
    assert capped(history, 10) is history


def test_a_directory_gets_diskcache_with_the_given_ttl_and_a_storage_brings_its_own(tmp_path):
    store = SessionStore(tmp_path / "sessions", ttl=0.1)  # as before storages existed
    try:
        store.append("s", _turn(1))
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
