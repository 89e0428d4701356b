"""The upstreams of one remote model: which to ask next, and which are down.

Requests go to the healthy upstream with the fewest requests in flight (rotating among
equals). An upstream is marked down when a request or a health check fails to reach it,
and up again when a health check gets an answer. Down upstreams are still tried, last:
when every upstream is marked down, one may have come back since the last check.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass


@dataclass(slots=True)
class Upstream:
    url: str  # the OpenAI base URL, e.g. "http://gpu-1:8000/v1"
    healthy: bool = True  # optimistic until a request or a health check says otherwise
    in_flight: int = 0
    error: str | None = None  # why it was last marked down


class UpstreamPool:
    def __init__(self, urls: list[str]) -> None:
        if not urls:
            raise ValueError("a remote model needs at least one upstream URL")
        self.upstreams = [Upstream(url) for url in urls]
        self._turn = itertools.count()

    def order(self) -> list[Upstream]:
        """Every upstream, the one to try first first."""
        start = next(self._turn) % len(self.upstreams)
        rotated = self.upstreams[start:] + self.upstreams[:start]
        # sorted() is stable: equals keep the rotation, so load spreads round-robin.
        return sorted(rotated, key=lambda upstream: (not upstream.healthy, upstream.in_flight))

    def mark_down(self, upstream: Upstream, reason: str) -> None:
        upstream.healthy = False
        upstream.error = reason

    def mark_up(self, upstream: Upstream) -> None:
        upstream.healthy = True
        upstream.error = None

    @property
    def healthy(self) -> list[Upstream]:
        return [upstream for upstream in self.upstreams if upstream.healthy]
