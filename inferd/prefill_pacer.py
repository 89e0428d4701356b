"""How many tokens of a long prompt a step may carry beside decoding streams, from step times.

A step that runs a prompt chunk next to decode rows takes longer than the decodes alone,
and by how much depends on the device, the model and how far the prompt has got (its
attention grows with it): on MLX's CPU backend a 56-token chunk of stories260K costs 3
to 6 times the 8 decodes beside it, on the torch engine with Qwen2.5-0.5B (int8, 2
cores) 2 to 3.5 times (75-130 ms beside a 37 ms decode pass, in one pass).
So instead of a token count fixed per machine, the pacer watches what steps cost and
sizes the next chunk so that a step takes at most `slowdown` times a decode-only step:
Sarathi-Serve's token budget for a latency target, measured as the server runs instead
of profiled once.

It starts small and at most doubles a step, so the first chunk beside running streams
cannot be the one that stalls them; until it has timed a decode-only step it sets no
limit. The engines keep their own cap (max_batch_tokens) and floor on top of it.
"""

from __future__ import annotations

# Weight of the newest decode-only step in the running average.
_DECODE_WEIGHT = 0.25


class PrefillPacer:
    """Learns a decode step's time and a chunk's extra cost; sizes the next chunk."""

    def __init__(self, slowdown: float, start_tokens: int) -> None:
        """slowdown: how many times a decode-only step a step with a chunk may take (>= 1).
        start_tokens: the first chunk's size, before any chunk was timed."""
        if slowdown < 1:
            raise ValueError(f"slowdown must be at least 1, not {slowdown}")
        self.slowdown = slowdown
        self._limit = float(max(start_tokens, 1))
        self._decode_seconds: float | None = None

    def record(self, decode_rows: int, prompt_tokens: int, seconds: float) -> None:
        """One step's work and wall time (prompt-only steps teach it nothing: nobody
        decodes beside them)."""
        if not decode_rows:
            return
        if not prompt_tokens:
            self.record_decode(seconds)
        elif self._decode_seconds is not None:
            self.record_chunk(prompt_tokens, seconds - self._decode_seconds)

    def record_decode(self, seconds: float) -> None:
        """A step of decode rows alone took `seconds`."""
        previous = self._decode_seconds
        self._decode_seconds = (
            seconds if previous is None else previous + _DECODE_WEIGHT * (seconds - previous)
        )

    def record_chunk(self, prompt_tokens: int, seconds: float) -> None:
        """`prompt_tokens` of prompt chunks added `seconds` to a step (an engine that
        times its chunks on their own says so directly)."""
        if self._decode_seconds is None or prompt_tokens <= 0:
            return
        allowed = (self.slowdown - 1) * self._decode_seconds
        grown = 2.0 * prompt_tokens
        self._limit = grown if seconds <= 0 else min(prompt_tokens * allowed / seconds, grown)

    def limit(self) -> int | None:
        """Prompt tokens the next step may carry beside its decode rows; None: no limit
        yet (no decode-only step timed)."""
        if self._decode_seconds is None:
            return None
        return max(round(self._limit), 1)
