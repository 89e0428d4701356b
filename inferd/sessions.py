"""Chat history, stored in diskcache so that it survives restarts and hard kills.

diskcache is used as a store, not a cache: nothing is evicted for space, and every
read-modify-write runs inside `transact()` so concurrent requests on one session (or
several server processes sharing the directory) never lose a message. With a `ttl`, a
session expires that long after its last write (a new turn renews it); `max_messages`
caps what a session keeps by dropping its oldest turns, never its system prompt.

A session belongs to an owner: the hash of the API key that created it (see
plugins/auth.py), or None when auth was off. Only its owner sees it; to everyone else
it looks exactly like a missing one. So sessions made while auth was off belong to no
key once auth is on.

Besides its messages a session records metadata for the web page and other clients:
when it was created and last changed, a title once renamed (None: clients show the first
user message), and, for a fork, its parent session and how many of the parent's
messages it started with (`fork_point`).

Every method blocks on SQLite: the server calls them through AsyncSessionStore
(inferd/session_io.py), never on the event loop.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import diskcache

Message = dict[str, str]


@dataclass(slots=True)
class Session:
    id: str
    messages: list[Message] = field(default_factory=list)
    owner: str | None = None
    created: float = field(default_factory=time.time)
    updated: float = 0.0  # last change to the messages (0: never, i.e. `created`)
    title: str | None = None
    parent: str | None = None
    fork_point: int | None = None

    def __post_init__(self) -> None:
        self.updated = self.updated or self.created

    def changed(self) -> None:
        self.updated = time.time()

    def to_record(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "owner": self.owner,
            "created": self.created,
            "updated": self.updated,
            "title": self.title,
            "parent": self.parent,
            "fork_point": self.fork_point,
        }

    @classmethod
    def from_record(cls, session_id: str, record: dict[str, Any]) -> Session:
        # Records written before the metadata existed lack its keys.
        return cls(
            session_id,
            list(record["messages"]),
            record.get("owner"),
            record["created"],
            record.get("updated", 0.0),
            record.get("title"),
            record.get("parent"),
            record.get("fork_point"),
        )


class SessionStore:
    def __init__(
        self,
        path: Path | str,
        *,
        ttl: float | None = None,
        max_messages: int | None = None,
        timeout: float = 5.0,
    ) -> None:
        # timeout is SQLite's busy wait; eviction "none" makes this a durable store.
        self._cache = diskcache.Cache(str(path), eviction_policy="none", timeout=timeout)
        self._ttl = ttl
        self._max_messages = max_messages

    def close(self) -> None:
        self._cache.close()

    @staticmethod
    def new_id() -> str:
        return str(uuid.uuid4())

    def _visible(self, record: dict[str, Any] | None, owner: str | None) -> bool:
        # Strict: a session made while auth was off (owner None) is no key's session.
        return record is not None and record.get("owner") == owner

    def _save(self, session: Session) -> None:
        """Write a session (inside the caller's transaction), capped and with a fresh ttl."""
        if self._max_messages is not None:
            session.messages = capped(session.messages, self._max_messages)
        self._cache.set(session.id, session.to_record(), expire=self._ttl)

    def get(self, session_id: str, owner: str | None = None) -> Session | None:
        record = self._cache.get(session_id)
        return Session.from_record(session_id, record) if self._visible(record, owner) else None

    def ids(self, owner: str | None = None) -> list[str]:
        """Session ids visible to `owner`, oldest first."""
        return [session.id for session in self.sessions(owner)]

    def sessions(self, owner: str | None = None) -> list[Session]:
        """Every session visible to `owner`, oldest first."""
        sessions = []
        for key in self._cache.iterkeys():
            record = self._cache.get(key)
            if self._visible(record, owner):
                sessions.append(Session.from_record(key, record))
        return sorted(sessions, key=lambda session: (session.created, session.id))

    def count(self) -> int:
        """Live sessions (expired ones are removed first)."""
        if self._ttl is not None:
            self._cache.expire()
        return len(self._cache)

    def ensure(
        self, session_id: str, owner: str | None, system_prompt: str | None
    ) -> Session | None:
        """Create the session if missing and set its system prompt if one is given.

        Returns None when the id is taken by another owner.
        """
        with self._cache.transact():
            record = self._cache.get(session_id)
            if record is not None and not self._visible(record, owner):
                return None
            session = (
                Session.from_record(session_id, record)
                if record
                else Session(session_id, owner=owner)
            )
            if system_prompt is not None:
                system = {"role": "system", "content": system_prompt}
                if session.messages and session.messages[0]["role"] == "system":
                    session.messages[0] = system
                else:
                    session.messages.insert(0, system)
                session.changed()
            if record is None or system_prompt is not None:
                self._save(session)
            return session

    def append(self, session_id: str, messages: list[Message], owner: str | None = None) -> None:
        """Append messages atomically (recreating the session if it was deleted meanwhile)."""
        with self._cache.transact():
            record = self._cache.get(session_id)
            session = (
                Session.from_record(session_id, record)
                if record
                else Session(session_id, owner=owner)
            )
            session.messages.extend(messages)
            session.changed()
            self._save(session)

    def delete(self, session_id: str, owner: str | None = None) -> bool:
        with self._cache.transact():
            if not self._visible(self._cache.get(session_id), owner):
                return False
            return bool(self._cache.delete(session_id))

    def rollback(self, session_id: str, amount: int, owner: str | None = None) -> int | None:
        """Drop the last `amount` messages; returns how many remain, None if no such session."""
        with self._cache.transact():
            record = self._cache.get(session_id)
            if not self._visible(record, owner):
                return None
            session = Session.from_record(session_id, record)
            del session.messages[max(0, len(session.messages) - amount) :]
            session.changed()
            self._save(session)
            return len(session.messages)

    def create(
        self, messages: list[Message], owner: str | None = None, title: str | None = None
    ) -> Session:
        """A new session holding `messages` (an imported conversation)."""
        session = Session(self.new_id(), list(messages), owner, title=title)
        self._save(session)
        return session

    def fork(self, session_id: str, keep: int | None, owner: str | None = None) -> Session | None:
        """A new session holding the first `keep` messages (all when None) of `session_id`,
        which it records as its parent. None if there is no such session; ValueError if
        `keep` is not between 0 and the number of messages."""
        with self._cache.transact():
            record = self._cache.get(session_id)
            if not self._visible(record, owner):
                return None
            messages = Session.from_record(session_id, record).messages
            keep = len(messages) if keep is None else keep
            if not 0 <= keep <= len(messages):
                raise ValueError(
                    f"'keep' must be between 0 and {len(messages)} (the number of messages "
                    f"in session {session_id!r}), got {keep}"
                )
            child = Session(
                self.new_id(), messages[:keep], owner, parent=session_id, fork_point=keep
            )
            self._save(child)
            return child

    def rename(
        self, session_id: str, title: str | None, owner: str | None = None
    ) -> Session | None:
        """Set the session's title (None: back to the default); None if no such session."""
        with self._cache.transact():
            record = self._cache.get(session_id)
            if not self._visible(record, owner):
                return None
            session = Session.from_record(session_id, record)
            session.title = title
            self._save(session)
            return session


def capped(messages: list[Message], limit: int) -> list[Message]:
    """The newest messages within `limit`: the system prompt stays first, and the kept
    history starts at a user message so it still alternates as chat templates expect."""
    if len(messages) <= limit:
        return messages
    system = messages[:1] if messages and messages[0]["role"] == "system" else []
    history = messages[len(system) :]
    history = history[max(0, len(history) - (limit - len(system))) :]
    while history and history[0]["role"] != "user":
        history = history[1:]
    return [*system, *history]
