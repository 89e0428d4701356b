"""Admission control: how many requests a model takes, and how long they may wait.

Each worker (a model on a device) decodes up to `max_concurrent` requests together and
lets up to `max_queue` more wait in its FIFO queue. One request more is refused at
once; one that waits longer than `queue_timeout` is refused when its time is up. Both
get a 503 with Retry-After before anything of the response is sent, so JSON, SSE and
WebSocket clients see the same refusal (a WebSocket gets `__ERROR__:` and stays open).

The count lives here, on the event loop: a request takes a Ticket before its prompt is
built and gives it back when its stream ends, however it ends. The engine itself stays
a plain FIFO that admits in order.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from inferd.backends.base import GenerationStats, TokenEvent
from inferd.config import ModelConfig
from inferd.errors import Overloaded
from inferd.stream import GenerationObserver, Stream

# Seconds a refused client is asked to wait: queues here move within seconds.
RETRY_AFTER = 1


class Gate:
    """The admission state of one worker: requests in flight and refusals by reason."""

    def __init__(self, model: ModelConfig, device: str) -> None:
        self.model = model.name
        self.device = device
        self.label = f"model {model.name!r} on {device}"
        self.max_concurrent = model.max_concurrent
        self.max_queue = model.queue_limit
        self.queue_timeout = model.queue_timeout
        self.in_flight = 0  # holding a ticket: being prepared, queued or decoding
        self.refused: Counter[str] = Counter()  # "queue_full" | "queue_timeout"

    @property
    def capacity(self) -> int:
        return self.max_concurrent + self.max_queue

    def enter(self) -> Ticket:
        """A place for one request; 503 at once when every place is taken."""
        if self.in_flight >= self.capacity:
            self.refused["queue_full"] += 1
            raise Overloaded(
                f"{self.label} is at capacity ({self.max_concurrent} decoding, "
                f"{self.max_queue} queued); retry shortly",
                retry_after=RETRY_AFTER,
            )
        self.in_flight += 1
        return Ticket(self)


class Ticket:
    """One request's place at a gate, from entering until its stream ends."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self._held = True

    def release(self) -> None:
        """Give the place back; safe to call more than once."""
        if self._held:
            self._held = False
            self.gate.in_flight -= 1

    def observe(self, observer: GenerationObserver) -> GenerationObserver:
        """`observer`, plus giving the place back when the generation ends."""
        return _ReleasingObserver(observer, self)

    async def admitted(self, stream: Stream) -> None:
        """Wait until the engine admits `stream`; 503 (and the stream cancelled) after
        `queue_timeout` seconds. A waiter that is cancelled (its client went away)
        cancels the stream too, so it never decodes for nobody."""
        try:
            await asyncio.wait_for(stream.wait_admitted(), self.gate.queue_timeout)
        except asyncio.TimeoutError:
            stream.cancel()
            self.gate.refused["queue_timeout"] += 1
            raise Overloaded(
                f"{self.gate.label} is busy: the request waited "
                f"{self.gate.queue_timeout:g} s in the queue; retry shortly",
                retry_after=RETRY_AFTER,
            ) from None
        except BaseException:
            stream.cancel()
            raise


class _ReleasingObserver:
    def __init__(self, inner: GenerationObserver, ticket: Ticket) -> None:
        self._inner = inner
        self._ticket = ticket
        # The plugins' output transforms, which the Stream looks for on its observer.
        self.output_filter = getattr(inner, "output_filter", None)

    def on_admitted(self, stats: GenerationStats) -> None:
        self._inner.on_admitted(stats)

    def on_token(self, event: TokenEvent, stats: GenerationStats) -> None:
        self._inner.on_token(event, stats)

    def on_finished(self, stats: GenerationStats) -> None:
        self._ticket.release()
        self._inner.on_finished(stats)


class Admission:
    """The gates of every worker, made on first use from the model's config."""

    def __init__(self) -> None:
        self._gates: dict[str, Gate] = {}

    def gate(self, model: ModelConfig, device: str) -> Gate:
        key = f"{model.id}@{device}"
        gate = self._gates.get(key)
        if gate is None:
            gate = self._gates[key] = Gate(model, device)
        return gate

    def gates(self) -> list[Gate]:
        return list(self._gates.values())

    @property
    def in_flight(self) -> int:
        return sum(gate.in_flight for gate in self._gates.values())
