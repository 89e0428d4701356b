"""Logging plugin failures without flooding the log.

A plugin that raises in `on_token` raises once per token: logging each would write a
traceback per token (a megabyte for a long answer) and hide everything else. A failure
is logged with its traceback the first time its kind -- (plugin, hook, exception type)
-- is seen; after that, at most one line per `interval` seconds says how many more there
were.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("inferd.plugins")
INTERVAL = 60.0


@dataclass(slots=True)
class _Kind:
    logged_at: float
    unlogged: int = 0


class FailureLog:
    def __init__(
        self, interval: float = INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval = interval
        self._clock = clock
        self._kinds: dict[tuple[str, str, str], _Kind] = {}

    def record(self, plugin: str, hook: str, error: BaseException) -> None:
        key = (plugin, hook, type(error).__name__)
        now = self._clock()
        kind = self._kinds.get(key)
        if kind is None:
            self._kinds[key] = _Kind(now)
            log.error(
                "plugin %r failed in %s (repeats of this failure are counted, and "
                "logged at most every %.0f s)",
                plugin,
                hook,
                self.interval,
                exc_info=error,
            )
        elif now - kind.logged_at < self.interval:
            kind.unlogged += 1
        else:
            log.error(
                "plugin %r failed in %s %d more times in the last %.0f s; the latest: %s: %s",
                plugin,
                hook,
                kind.unlogged + 1,
                now - kind.logged_at,
                type(error).__name__,
                error,
            )
            kind.logged_at, kind.unlogged = now, 0
