"""Percentiles and summaries of what clients saw: pure functions over recorded times."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .sse_timing import StreamRecord


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) with linear interpolation between ranks; None if empty.

    The same definition as numpy's default, so p50 of [1, 2, 3, 4] is 2.5.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    ordered = sorted(values)
    if not ordered:
        return None
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True, slots=True)
class Spread:
    """p50/p95/p99 and the maximum of a set of durations (seconds), with the sample size."""

    p50: float | None
    p95: float | None
    p99: float | None
    max: float | None
    n: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread:
        data = list(values)
        return cls(
            percentile(data, 50),
            percentile(data, 95),
            percentile(data, 99),
            max(data) if data else None,
            len(data),
        )

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def ratio(numerator: object, denominator: object) -> float | None:
    """numerator / denominator, or None unless both are numbers and the denominator is not 0
    (a figure that was not measured is None or the reason, a string)."""
    numbers = all(isinstance(x, (int, float)) for x in (numerator, denominator))
    if not numbers or not denominator:
        return None
    return numerator / denominator  # type: ignore[operator]


@dataclass(frozen=True, slots=True)
class LoadSummary:
    """What N concurrent streaming clients saw, all together."""

    streams: int
    tokens: int
    seconds: float  # first request sent to last token received
    aggregate_tok_s: float
    ttft: Spread
    itl: Spread  # gaps between consecutive tokens of a stream, all streams pooled
    errors: int
    error_samples: tuple[str, ...]


def summarize_load(records: Sequence[StreamRecord]) -> LoadSummary:
    if not records:
        raise ValueError("no streams to summarize")
    start = min(r.sent_at for r in records)
    end = max([start, *(t for r in records for t in r.token_times[-1:])])
    # what the servers generated: a held-back character's tokens arrive as one event
    tokens = sum(r.generated for r in records)
    seconds = end - start
    failed = [r for r in records if r.failed]
    return LoadSummary(
        streams=len(records),
        tokens=tokens,
        seconds=seconds,
        aggregate_tok_s=tokens / seconds if seconds > 0 else 0.0,
        ttft=Spread.of(r.ttft for r in records if r.ttft is not None),
        itl=Spread.of(b - a for r in records for a, b in r.gaps()),
        errors=len(failed),
        error_samples=tuple(dict.fromkeys(r.error or "no tokens" for r in failed))[:3],
    )


# What a client receives where the detokenizer held back bytes that formed no character.
REPLACEMENT = "\ufffd"


@dataclass(frozen=True, slots=True)
class InterferenceSummary:
    """The streams' token gaps while steady and while a long prompt was prefilled."""

    steady: Spread
    during: Spread
    p99_ratio: float | None  # during p99 / steady p99: 1.0 means no interference
    prefill_seconds: float | None  # the long prompt's time to first token
    long_prompt_error: str | None
    # The longest gap "during" ended in U+FFFD: byte tokens that made no character (a
    # random model emits them) were held back, not a step that stalled.
    max_gap_held: bool = False


def summarize_interference(
    streams: Sequence[StreamRecord], long_prompt: StreamRecord, steady_from: float
) -> InterferenceSummary:
    """Steady gaps end before the long prompt was sent; the gaps "during" overlap the span
    from its sending to its first token (so a stall across the whole prefill counts)."""
    sent = long_prompt.sent_at
    first = long_prompt.token_times[0] if long_prompt.token_times else float("inf")
    steady = Spread.of(
        b - a for r in streams for a, b in r.gaps() if a >= steady_from and b <= sent
    )
    # each gap "during" with the text that ended it
    ended_by = [
        (b - a, r.pieces[i + 1] if i + 1 < len(r.pieces) else "")
        for r in streams
        for i, (a, b) in enumerate(r.gaps())
        if b > sent and a < first
    ]
    during = Spread.of(gap for gap, _ in ended_by)
    longest = max(ended_by, key=lambda gap: gap[0], default=(0.0, ""))
    return InterferenceSummary(
        steady=steady,
        during=during,
        p99_ratio=ratio(during.p99, steady.p99),
        prefill_seconds=long_prompt.ttft,
        long_prompt_error=(long_prompt.error or "no tokens") if long_prompt.failed else None,
        max_gap_held=REPLACEMENT in longest[1],
    )
