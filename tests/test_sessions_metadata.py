"""inferd/sessions.py: a session's metadata (times, title, parent), forks, renames, imports."""

from __future__ import annotations

import threading

import pytest

from inferd.sessions import SessionStore
from tests import sessions_support
from tests.sessions_support import turn

store = sessions_support.store  # the fixture: a store over each storage


def test_a_new_session_records_its_times_and_no_title_or_parent(store):
    session = store.ensure("s", None, None)
    assert session.updated == session.created > 0
    assert (session.title, session.parent, session.fork_point) == (None, None, None)


def test_every_change_to_the_messages_moves_updated_on(store):
    store.ensure("s", None, None)
    times = [store.get("s").updated]
    for change in (
        lambda: store.append("s", turn(1)),
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
        cache.set("old", {"messages": turn(1), "owner": None, "created": 123.0})
    store = SessionStore(tmp_path / "sessions")
    try:
        session = store.get("old")
        assert session.messages == turn(1)
        assert session.updated == 123.0
        assert (session.title, session.parent, session.fork_point) == (None, None, None)
    finally:
        store.close()


def test_fork_copies_the_first_messages_and_records_its_parent(store):
    store.append("s", turn(1) + turn(2))
    child = store.fork("s", 2)
    assert child.id != "s"
    assert child.messages == turn(1)
    assert (child.parent, child.fork_point, child.owner) == ("s", 2, None)
    assert store.get(child.id).messages == turn(1)
    assert store.get("s").messages == turn(1) + turn(2)  # the parent is untouched
    store.append(child.id, turn(3))
    assert store.get("s").messages == turn(1) + turn(2)


def test_fork_without_keep_copies_everything_and_keep_zero_nothing(store):
    store.append("s", turn(1))
    assert store.fork("s", None).messages == turn(1)
    empty = store.fork("s", 0)
    assert (empty.messages, empty.fork_point) == ([], 0)


@pytest.mark.parametrize("keep", [-1, 3, 100])
def test_fork_refuses_a_keep_outside_the_history(store, keep):
    store.append("s", turn(1))
    with pytest.raises(ValueError, match="between 0 and 2"):
        store.fork("s", keep)
    assert store.ids() == ["s"]


def test_fork_of_a_missing_or_foreign_session_is_none(store):
    assert store.fork("missing", 0) is None
    store.append("mine", turn(1), "alice")
    assert store.fork("mine", 1, "bob") is None
    assert store.fork("mine", 1, "alice").owner == "alice"


def test_rename_sets_and_clears_the_title_without_touching_updated(store):
    store.append("s", turn(1))
    before = store.get("s")
    assert store.rename("s", "My chat").title == "My chat"
    after = store.get("s")
    assert after.title == "My chat"
    assert after.updated == before.updated  # a rename is not a use of the chat
    assert store.rename("s", None).title is None
    assert store.rename("missing", "x") is None


def test_create_stores_an_imported_conversation(store):
    session = store.create(turn(1), owner="alice", title="Imported")
    assert store.get(session.id, "alice").messages == turn(1)
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
            store.append("s", turn(number))

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
