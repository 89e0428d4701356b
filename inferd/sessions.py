"""Chat history: every rule about sessions, over a storage that keeps their records.

SessionStore holds the rules -- who sees a session, how a system prompt, a turn, a
rollback, a fork or a rename changes it -- and nothing about where records live. A
SessionStorage keeps them: diskcache on this machine (inferd/session_disk.py, the
default) or Redis shared by several replicas (inferd/session_redis.py). Each storage
runs a change as one atomic read-modify-write of one record, so concurrent requests
(or replicas) never lose a message, and both survive a hard kill of inferd.

With a `ttl`, a session expires that long after its last write (a new turn renews it);
`max_messages` caps what a session keeps by dropping its oldest turns, never its system
prompt.

A session belongs to an owner: the hash of the API key that created it (see
plugins/auth.py), or None when auth was off. Only its owner sees it; to everyone else
it looks exactly like a missing one. So sessions made while auth was off belong to no
key once auth is on.

Besides its messages a session records metadata for the web page and other clients:
when it was created and last changed, a title once renamed (None: clients show the first
user message), and, for a fork, its parent session and how many of the parent's
messages it started with (`fork_point`).

Every method blocks (on SQLite, or on the network): the server calls them through
AsyncSessionStore (inferd/session_io.py), never on the event loop.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

if TYPE_CHECKING:
    from inferd.config import SessionsConfig

Message = dict[str, str]
Record = dict[str, Any]  # a session as stored (Session.to_record)
T = TypeVar("T")


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


@dataclass(frozen=True, slots=True)
class Edit(Generic[T]):
    """What a change does to one record: its new value (None: leave it), or delete it;
    and what the change returns to its caller."""

    result: T
    write: Record | None = None
    delete: bool = False


class SessionStorage(Protocol):
    """Where session records live: a key-value store with atomic read-modify-write.

    Every method may block (disk, network): the server calls the store off the loop."""

    def read(self, key: str) -> Record | None: ...

    def items(self) -> Iterator[tuple[str, Record]]:
        """Every record, in no particular order."""
        ...

    def change(self, key: str, edit: Callable[[Record | None], Edit[T]]) -> T:
        """Apply `edit` to the record atomically: no other change to `key` lands between
        the read and the write. `edit` may run more than once (when it is retried), so it
        must not have side effects."""
        ...

    def count(self) -> int:
        """Live records (expired ones are not counted)."""
        ...

    # What the storage raises when it is busy, down or failing: the request gets a 503.
    errors: tuple[type[BaseException], ...]
    # Those of `errors` that mean the change did not happen and may simply be retried.
    retryable: tuple[type[BaseException], ...]

    def check(self) -> None:
        """Raise if the storage cannot be reached (at start-up)."""
        ...

    def close(self) -> None: ...


def _visible(record: Record | None, owner: str | None) -> bool:
    # Strict: a session made while auth was off (owner None) is no key's session.
    return record is not None and record.get("owner") == owner


def _unchanged(result: T) -> Edit[T]:
    return Edit(result)


class SessionStore:
    """The sessions, over a storage: a SessionStorage, or a diskcache directory's path
    (then `ttl` and `timeout` configure it; a storage object brings its own)."""

    def __init__(
        self,
        storage: SessionStorage | Path | str,
        *,
        ttl: float | None = None,
        max_messages: int | None = None,
        timeout: float = 5.0,
    ) -> None:
        if isinstance(storage, (str, Path)):
            from inferd.session_disk import DiskStorage

            storage = DiskStorage(storage, ttl=ttl, timeout=timeout)
        elif ttl is not None:
            raise TypeError("give the storage its ttl: SessionStore(storage) takes none")
        self._storage = storage
        self._max_messages = max_messages

    @property
    def errors(self) -> tuple[type[BaseException], ...]:
        """What the storage raises when it is busy, down or failing."""
        return self._storage.errors

    @property
    def retryable(self) -> tuple[type[BaseException], ...]:
        """Failures after which the change did not happen and may be retried."""
        return self._storage.retryable

    def _record(self, session: Session) -> Record:
        """What a change writes: the session capped to `max_messages`."""
        if self._max_messages is not None:
            session.messages = capped(session.messages, self._max_messages)
        return session.to_record()

    def close(self) -> None:
        self._storage.close()

    def check(self) -> None:
        """Raise if the storage cannot be reached."""
        self._storage.check()

    @staticmethod
    def new_id() -> str:
        return str(uuid.uuid4())

    def get(self, session_id: str, owner: str | None = None) -> Session | None:
        record = self._storage.read(session_id)
        return Session.from_record(session_id, record) if _visible(record, owner) else None

    def ids(self, owner: str | None = None) -> list[str]:
        """Session ids visible to `owner`, oldest first."""
        return [session.id for session in self.sessions(owner)]

    def sessions(self, owner: str | None = None) -> list[Session]:
        """Every session visible to `owner`, oldest first."""
        sessions = [
            Session.from_record(key, record)
            for key, record in self._storage.items()
            if _visible(record, owner)
        ]
        return sorted(sessions, key=lambda session: (session.created, session.id))

    def count(self) -> int:
        """Live sessions (expired ones are not counted)."""
        return self._storage.count()

    def ensure(
        self, session_id: str, owner: str | None, system_prompt: str | None
    ) -> Session | None:
        """Create the session if missing and set its system prompt if one is given.

        Returns None when the id is taken by another owner. The record is always written
        back, which renews a `ttl`: a session a turn has begun on does not expire under
        it (unless the answer takes longer than the ttl), so `append(created=...)` can
        treat a missing session as deleted.
        """

        def edit(record: Record | None) -> Edit[Session | None]:
            if record is not None and not _visible(record, owner):
                return _unchanged(None)
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
            return Edit(session, self._record(session))

        return self._storage.change(session_id, edit)

    def append(
        self,
        session_id: str,
        messages: list[Message],
        owner: str | None = None,
        *,
        created: float | None = None,
    ) -> bool:
        """Append messages atomically; returns whether they were stored.

        `created`: the `created` of the session the turn began on (as `ensure` returned
        it). The messages are then stored only in that very session: if it was deleted
        meanwhile -- or deleted and made anew under the same id -- nothing is written, so
        a turn still streaming can never bring back a session its user deleted. None:
        create the session if it is missing."""

        def edit(record: Record | None) -> Edit[bool]:
            if created is not None and (
                record is None or not _visible(record, owner) or record["created"] != created
            ):
                return _unchanged(False)
            session = (
                Session.from_record(session_id, record)
                if record
                else Session(session_id, owner=owner)
            )
            session.messages.extend(messages)
            session.changed()
            return Edit(True, self._record(session))

        return self._storage.change(session_id, edit)

    def delete(self, session_id: str, owner: str | None = None) -> bool:
        def edit(record: Record | None) -> Edit[bool]:
            if not _visible(record, owner):
                return _unchanged(False)
            return Edit(True, delete=True)

        return self._storage.change(session_id, edit)

    def rollback(self, session_id: str, amount: int, owner: str | None = None) -> int | None:
        """Drop the last `amount` messages; returns how many remain, None if no such session."""

        def edit(record: Record | None) -> Edit[int | None]:
            if record is None or not _visible(record, owner):
                return _unchanged(None)
            session = Session.from_record(session_id, record)
            del session.messages[max(0, len(session.messages) - amount) :]
            session.changed()
            record = self._record(session)
            return Edit(len(session.messages), record)

        return self._storage.change(session_id, edit)

    def create(
        self, messages: list[Message], owner: str | None = None, title: str | None = None
    ) -> Session:
        """A new session holding `messages` (an imported conversation)."""
        session = Session(self.new_id(), list(messages), owner, title=title)
        record = self._record(session)
        return self._storage.change(session.id, lambda _: Edit(session, record))

    def fork(self, session_id: str, keep: int | None, owner: str | None = None) -> Session | None:
        """A new session holding the first `keep` messages (all when None) of `session_id`,
        which it records as its parent. None if there is no such session; ValueError if
        `keep` is not between 0 and the number of messages."""
        parent = self.get(session_id, owner)  # one read: a consistent snapshot
        if parent is None:
            return None
        keep = len(parent.messages) if keep is None else keep
        if not 0 <= keep <= len(parent.messages):
            raise ValueError(
                f"'keep' must be between 0 and {len(parent.messages)} (the number of messages "
                f"in session {session_id!r}), got {keep}"
            )
        child = Session(
            self.new_id(), parent.messages[:keep], owner, parent=session_id, fork_point=keep
        )
        record = self._record(child)
        return self._storage.change(child.id, lambda _: Edit(child, record))

    def rename(
        self, session_id: str, title: str | None, owner: str | None = None
    ) -> Session | None:
        """Set the session's title (None: back to the default); None if no such session."""

        def edit(record: Record | None) -> Edit[Session | None]:
            if record is None or not _visible(record, owner):
                return _unchanged(None)
            session = Session.from_record(session_id, record)
            session.title = title
            return Edit(session, self._record(session))

        return self._storage.change(session_id, edit)


def open_storage(config: SessionsConfig) -> SessionStorage:
    """The storage `[sessions]` names: Redis at `url`, else diskcache at `path`."""
    if config.url is None:
        from inferd.session_disk import DiskStorage

        return DiskStorage(config.path, ttl=config.ttl, timeout=config.timeout)
    from inferd.session_redis import RedisStorage

    return RedisStorage(config.url, ttl=config.ttl, timeout=config.timeout)


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
