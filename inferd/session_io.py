"""The session store as the event loop sees it: every call runs on a small thread pool.

SessionStore (inferd/sessions.py) is a plain synchronous class -- SQLite blocks, and so
would a Redis client. AsyncSessionStore runs each call on its own threads and waits at
most `timeout` seconds for it, so a locked or failing store gives the request a clear
503 instead of hanging it (or, worse, the event loop and every other request).

A write is never abandoned: when its caller stops waiting (a timeout, a client that
went away, a drain that cancels the request) it still finishes in the background -- the
store is transactional, so it lands whole or not at all -- and close() waits for it.
Appending an answered turn goes further: while the store stays locked (or, for Redis,
unreachable) it is retried (for up to PERSIST_FOR seconds), since nobody is left to
retry it. A read nobody waits
for any more is dropped if it has not started yet.

One thread by default: calls then run in the order they were made, so the next turn's
read always sees the previous turn's write (SQLite serialises writers anyway).

SessionStore runs over a storage -- diskcache or Redis -- which says what it raises
when it is busy or down (`errors`) and which of those leave nothing done (`retryable`).
Wrapping a new method is one line: `title = offloaded(SessionStore.title, write=True)`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

from inferd.errors import RetryLater
from inferd.sessions import SessionStore

log = logging.getLogger("inferd.sessions")
P = ParamSpec("P")
R = TypeVar("R")
# How long an answered turn's append keeps retrying a locked store in the background.
PERSIST_FOR = 60.0


class StoreUnavailable(RetryLater):
    """The session store did not answer in time or failed; stored history is untouched."""


def offloaded(
    method: Callable[Concatenate[SessionStore, P], R],
    *,
    write: bool = False,
    persistent: bool = False,
) -> Callable[Concatenate[AsyncSessionStore, P], Awaitable[R]]:
    """An async method that runs the store's method of the same name on the pool.

    `write`: finish it even when nobody waits any more. `persistent`: also retry it while
    the store is locked (only for writes that are safe to apply late, such as a turn)."""
    name = method.__name__

    async def call(self: AsyncSessionStore, *args: P.args, **kwargs: P.kwargs) -> R:
        bound = getattr(self.store, name)  # the store's own method: any store class works
        work = functools.partial(bound, *args, **kwargs)
        if persistent:
            work = functools.partial(self.until_stored, work)
        return await self.run(name, work, write or persistent)

    call.__name__ = name
    call.__doc__ = method.__doc__
    return call


class AsyncSessionStore:
    """SessionStore's methods as coroutines, each bounded by `timeout` seconds."""

    def __init__(self, store: SessionStore, *, timeout: float, threads: int = 1) -> None:
        self.store = store
        self.timeout = timeout
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, "inferd-sessions")
        self._pending_writes: set[concurrent.futures.Future[Any]] = set()
        self._closed = False

    new_id = staticmethod(SessionStore.new_id)  # no I/O: stays synchronous

    get = offloaded(SessionStore.get)
    ids = offloaded(SessionStore.ids)
    sessions = offloaded(SessionStore.sessions)
    count = offloaded(SessionStore.count, write=True)  # removes expired sessions
    ensure = offloaded(SessionStore.ensure, write=True)
    append = offloaded(SessionStore.append, persistent=True)  # an answered turn
    delete = offloaded(SessionStore.delete, write=True)
    rollback = offloaded(SessionStore.rollback, write=True)
    create = offloaded(SessionStore.create, write=True)
    fork = offloaded(SessionStore.fork, write=True)
    rename = offloaded(SessionStore.rename, write=True)

    async def run(self, name: str, call: Callable[[], R], write: bool) -> R:
        """Run `call` on the pool; 503 when the store fails or takes longer than `timeout`."""
        if self._closed:
            raise StoreUnavailable("the session store is closed: the server is shutting down")
        future = self._pool.submit(call)
        if write:
            self._pending_writes.add(future)
            future.add_done_callback(self._pending_writes.discard)
        try:
            # Shielded: the caller may stop waiting, the call itself is not cut short.
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), self.timeout)
        except asyncio.TimeoutError:
            if not write:
                future.cancel()  # only takes effect if it has not started
            log.error("session store: %s did not finish within %s s", name, self.timeout)
            raise StoreUnavailable(
                f"the session store is busy (no answer within {self.timeout:g} s); retry shortly"
            ) from None
        except self.store.errors as error:
            log.error("session store: %s failed: %s", name, error)
            raise StoreUnavailable(
                "the session store failed; stored history is unchanged, retry shortly"
            ) from None

    def until_stored(self, work: Callable[[], R]) -> R:
        """Run `work` (on the pool thread), retrying while the store stays locked or
        unreachable. Only failures that leave nothing done are retried (a locked SQLite
        transaction never started), so retrying cannot apply a write twice."""
        deadline = time.monotonic() + PERSIST_FOR
        while True:
            try:
                return work()
            except self.store.retryable:
                if self._closed or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @property
    def pending_writes(self) -> int:
        return len(self._pending_writes)

    async def close(self, timeout: float = 10.0) -> None:
        """Refuse new calls, let pending writes finish (up to `timeout` s), close the store."""
        self._closed = True
        pending = list(self._pending_writes)
        if pending:
            _, unfinished = await asyncio.to_thread(concurrent.futures.wait, pending, timeout)
            if unfinished:
                log.error("session store: %d writes still pending at shutdown", len(unfinished))
        self._pool.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(self.store.close)
