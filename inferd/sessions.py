"""Chat history, stored in diskcache so that it survives restarts and hard kills.

diskcache is used as a store, not a cache: nothing is ever evicted, and every
read-modify-write runs inside `transact()` so concurrent requests on one session (or
several server processes sharing the directory) never lose a message. A session may
belong to an owner (the hash of the API key that created it, see plugins/auth.py);
sessions of another owner look exactly like missing ones.
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

    def to_record(self) -> dict[str, Any]:
        return {"messages": self.messages, "owner": self.owner, "created": self.created}

    @classmethod
    def from_record(cls, session_id: str, record: dict[str, Any]) -> Session:
        return cls(session_id, list(record["messages"]), record.get("owner"), record["created"])


class SessionStore:
    def __init__(self, path: Path | str) -> None:
        # timeout is SQLite's busy wait; eviction "none" makes this a durable store.
        self._cache = diskcache.Cache(str(path), eviction_policy="none", timeout=5)

    def close(self) -> None:
        self._cache.close()

    @staticmethod
    def new_id() -> str:
        return str(uuid.uuid4())

    def _visible(self, record: dict[str, Any] | None, owner: str | None) -> bool:
        # Sessions without an owner (auth off when they were made) are visible to all.
        return record is not None and (record.get("owner") is None or record["owner"] == owner)

    def get(self, session_id: str, owner: str | None = None) -> Session | None:
        record = self._cache.get(session_id)
        return Session.from_record(session_id, record) if self._visible(record, owner) else None

    def ids(self, owner: str | None = None) -> list[str]:
        """Session ids visible to `owner`, oldest first."""
        sessions = []
        for key in self._cache.iterkeys():
            record = self._cache.get(key)
            if self._visible(record, owner):
                sessions.append((record["created"], key))
        return [key for _, key in sorted(sessions)]

    def count(self) -> int:
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
            if record is None or system_prompt is not None:
                self._cache.set(session_id, session.to_record())
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
            self._cache.set(session_id, session.to_record())

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
            self._cache.set(session_id, session.to_record())
            return len(session.messages)
