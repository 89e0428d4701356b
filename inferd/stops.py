"""Stop sequences over a stream of text deltas.

Text is streamed as it is detokenised, but a stop sequence may arrive split over many
deltas ("<|" then "end" then "|>"). StopMatcher releases text as soon as it can no longer
be the start of a stop sequence, holds back only the longest suffix that still could be,
and cuts the stream right before the first stop sequence found, which is never emitted.
"""

from __future__ import annotations

from collections.abc import Sequence


class StopMatcher:
    """Find the first of several stop strings in text that arrives piece by piece."""

    def __init__(self, stops: Sequence[str]) -> None:
        # Empty strings would match everywhere; callers mean "no stop" by them.
        self._stops = tuple(dict.fromkeys(s for s in stops if s))
        self._held = ""
        self._stopped = False

    @property
    def stopped(self) -> bool:
        """Whether a stop sequence has been seen (nothing more will be emitted)."""
        return self._stopped

    def push(self, text: str) -> tuple[str, bool]:
        """Add text; return (text safe to emit now, whether a stop sequence was hit)."""
        if self._stopped:
            return "", True
        if not self._stops:
            return text, False
        buf = self._held + text
        cut = self._first_stop(buf)
        if cut is not None:
            self._held = ""
            self._stopped = True
            return buf[:cut], True
        keep = self._partial_suffix_len(buf)
        self._held = buf[len(buf) - keep :]
        return buf[: len(buf) - keep], False

    def flush(self) -> str:
        """Release the held-back text at the natural end of the stream."""
        held, self._held = self._held, ""
        return "" if self._stopped else held

    def _first_stop(self, buf: str) -> int | None:
        """Index where the earliest stop sequence in buf starts, if any."""
        hits = [i for i in (buf.find(s) for s in self._stops) if i >= 0]
        return min(hits) if hits else None

    def _partial_suffix_len(self, buf: str) -> int:
        """Length of the longest suffix of buf that is a proper prefix of some stop."""
        best = 0
        for stop in self._stops:
            # Only suffixes longer than the best so far can matter; try longest first.
            for n in range(min(len(stop) - 1, len(buf)), best, -1):
                if buf.endswith(stop[:n]):
                    best = n
                    break
        return best
