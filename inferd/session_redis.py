"""Session records in Redis, shared by every inferd replica that names the same server.

Each session is one JSON string under `inferd:session:<id>`. A change is an optimistic
transaction: WATCH the key, read it, compute the new record, then MULTI/EXEC the write;
when another replica wrote the key in between, EXEC fails and the change runs again on
the fresh record, so concurrent writers never lose a message. A write is acknowledged
only once Redis has it, so killing an inferd replica loses nothing; Redis itself
survives restarts with its append-only file (`appendonly yes`; `appendfsync always` to
lose nothing on a power cut, at some write speed -- docs/deploy.md). With a `ttl`, a
record expires that many seconds after its last write (Redis expires the key itself).

Needs redis-py: `pip install 'inferd[redis]'`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from inferd.sessions import Edit, Record

try:
    import redis
except ImportError as missing:  # pragma: no cover - the dev extra installs it
    raise ImportError(
        "[sessions] url = \"redis://...\" needs redis-py: pip install 'inferd[redis]'"
    ) from missing

T = TypeVar("T")
PREFIX = "inferd:session:"
SCAN_BATCH = 500  # keys per SCAN (and per MGET) when listing sessions


class OutcomeUnknown(redis.RedisError):
    """A write's reply was lost and Redis could not be asked whether it landed."""


class RedisStorage:
    errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
    # Raised before a transaction's EXEC (a lost EXEC is checked, or OutcomeUnknown):
    # nothing was written, so a retry is safe.
    retryable: tuple[type[BaseException], ...] = (redis.ConnectionError, redis.TimeoutError)

    def __init__(self, url: str, *, ttl: float | None = None, timeout: float = 5.0) -> None:
        self.url = url
        self._ttl_ms = None if ttl is None else max(1, round(ttl * 1000))
        self._redis = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=30
        )

    def read(self, key: str) -> Record | None:
        return _decode(self._redis.get(PREFIX + key))

    def items(self) -> Iterator[tuple[str, Record]]:
        batch: list[bytes] = []
        for name in self._redis.scan_iter(match=PREFIX + "*", count=SCAN_BATCH):
            batch.append(name)
            if len(batch) >= SCAN_BATCH:
                yield from self._records(batch)
                batch = []
        if batch:
            yield from self._records(batch)

    def _records(self, names: list[bytes]) -> Iterator[tuple[str, Record]]:
        for name, raw in zip(names, self._redis.mget(names), strict=True):
            record = _decode(raw)
            if record is not None:  # deleted since the keys were listed
                yield name.decode().removeprefix(PREFIX), record

    def change(self, key: str, edit: Callable[[Record | None], Edit[T]]) -> T:
        name = PREFIX + key
        with self._redis.pipeline() as pipe:
            while True:
                sent: Edit[T] | None = None
                try:
                    pipe.watch(name)
                    done = edit(_decode(pipe.get(name)))
                    if done.write is None and not done.delete:
                        return done.result
                    pipe.multi()
                    if done.delete:
                        pipe.delete(name)
                    else:
                        pipe.set(name, json.dumps(done.write), px=self._ttl_ms)
                    sent = done
                    pipe.execute()
                    return done.result
                except redis.WatchError:
                    # Another writer got there first: edit the fresh record. redis-py also
                    # says WatchError when the connection broke during EXEC -- the write
                    # may then have landed, and must not be applied twice.
                    if sent is not None and self._landed(name, sent):
                        return sent.result

    def _landed(self, name: str, done: Edit[Any]) -> bool:
        try:
            current = _decode(self._redis.get(name))
        except redis.RedisError as error:
            raise OutcomeUnknown(f"a write to {name} may or may not have landed: {error}") from None
        return current is None if done.delete else current == done.write

    def count(self) -> int:
        return sum(1 for _ in self._redis.scan_iter(match=PREFIX + "*", count=SCAN_BATCH))

    def check(self) -> None:
        self._redis.ping()

    def close(self) -> None:
        self._redis.close()


def _decode(raw: bytes | None) -> Record | None:
    return None if raw is None else json.loads(raw)
