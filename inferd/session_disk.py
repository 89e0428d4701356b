"""Session records in diskcache: the embedded default, on this machine's disk.

diskcache is used as a store, not a cache: nothing is ever evicted, and every
read-modify-write runs inside `transact()` (SQLite's write lock), so concurrent requests
on one session -- or several server processes sharing the directory -- never lose a
message. SQLite's journal makes every committed change survive a hard kill. With a
`ttl`, a record expires that many seconds after its last write.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import diskcache

from inferd.sessions import Edit, Record

T = TypeVar("T")


class DiskStorage:
    # diskcache.Timeout: SQLite stayed locked (nothing was written, so a retry is safe).
    errors: tuple[type[BaseException], ...] = (diskcache.Timeout, sqlite3.Error, OSError)
    retryable: tuple[type[BaseException], ...] = (diskcache.Timeout,)

    def __init__(self, path: Path | str, *, ttl: float | None = None, timeout: float = 5.0) -> None:
        # timeout is SQLite's busy wait; eviction "none" makes this a durable store.
        self._cache = diskcache.Cache(str(path), eviction_policy="none", timeout=timeout)
        self._ttl = ttl

    def read(self, key: str) -> Record | None:
        return self._cache.get(key)

    def items(self) -> Iterator[tuple[str, Record]]:
        for key in self._cache.iterkeys():
            record = self._cache.get(key)
            if record is not None:  # deleted since the keys were listed
                yield key, record

    def change(self, key: str, edit: Callable[[Record | None], Edit[T]]) -> T:
        with self._cache.transact():
            done = edit(self._cache.get(key))
            if done.delete:
                self._cache.delete(key)
            elif done.write is not None:
                self._cache.set(key, done.write, expire=self._ttl)
            return done.result

    def count(self) -> int:
        if self._ttl is not None:
            self._cache.expire()  # len() would count expired records not yet removed
        return len(self._cache)

    def check(self) -> None:
        """diskcache opened its directory in __init__: nothing can be unreachable."""

    def close(self) -> None:
        self._cache.close()
