"""inferd/sessions.py: the diskcache-backed session store."""

from __future__ import annotations

import threading

import pytest

from inferd.sessions import SessionStore


@pytest.fixture
def store(tmp_path):
    store = SessionStore(tmp_path / "sessions")
    yield store
    store.close()


def _turn(number: int) -> list[dict[str, str]]:
    return [
        {"role": "user", "content": f"question {number}"},
        {"role": "assistant", "content": f"answer {number}"},
    ]


def test_new_ids_are_unique():
    assert len({SessionStore.new_id() for _ in range(100)}) == 100


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


def test_two_stores_on_one_directory_share_sessions(tmp_path):
    # Several server processes (or a restart) see the same history.
    first = SessionStore(tmp_path / "sessions")
    first.append("s", _turn(1))
    first.close()
    second = SessionStore(tmp_path / "sessions")
    try:
        assert second.get("s").messages == _turn(1)
    finally:
        second.close()


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


def test_sessions_without_owner_are_visible_to_everyone(store):
    store.ensure("open", None, None)
    assert store.get("open", "alice") is not None
    assert store.ids("bob") == ["open"]
