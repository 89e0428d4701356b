"""Path lists in plugin config: exact paths, or prefixes written with a trailing "*"."""

from __future__ import annotations

from collections.abc import Iterable


class PathSet:
    """Matches "/health" exactly and "/static/*" as a prefix."""

    def __init__(self, patterns: Iterable[str]) -> None:
        patterns = set(patterns)
        self._exact = frozenset(p for p in patterns if not p.endswith("*"))
        self._prefixes = tuple(p[:-1] for p in patterns if p.endswith("*"))

    def __contains__(self, path: str) -> bool:
        return path in self._exact or path.startswith(self._prefixes)
