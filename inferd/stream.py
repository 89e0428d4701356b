"""The event-loop side of one generation: an async iterator of TokenEvents.

The model-owner thread (inferd/engine.py) pushes events into a Stream through
`loop.call_soon_threadsafe`; the route that started the generation awaits them. The
plugins' lifecycle callbacks (a GenerationObserver) fire as the events are consumed, on
the event loop, so they see exactly what the client is sent.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from inferd.backends.base import FinishReason, GenerationStats, SamplingParams, TokenEvent


class GenerationObserver(Protocol):
    """Lifecycle callbacks of one generation, called on the event loop."""

    def on_admitted(self, stats: GenerationStats) -> None: ...
    def on_token(self, event: TokenEvent, stats: GenerationStats) -> None: ...
    def on_finished(self, stats: GenerationStats) -> None: ...


class Admitted:
    """Marker the owner thread sends when a request leaves the queue for decoding."""


class Stream:
    """The event-loop side of one generation: an async iterator of TokenEvents."""

    def __init__(
        self, prompt_ids: Sequence[int], params: SamplingParams, observer: GenerationObserver | None
    ) -> None:
        self.prompt_ids = list(prompt_ids)
        self.params = params
        self.stats = GenerationStats(prompt_tokens=len(self.prompt_ids), queued_at=time.monotonic())
        self.cancelled = threading.Event()
        self._observer = observer
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[TokenEvent | Admitted] = asyncio.Queue()
        self._finished = False

    def push(self, item: TokenEvent | Admitted) -> None:
        """Called from the owner thread."""
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self.cancelled.set()

    async def next_event(self) -> TokenEvent:
        """The next token or the final event; lifecycle callbacks fire as events arrive."""
        while True:
            event = self._accept(await self._queue.get())
            if event is not None:
                return event

    @property
    def finished(self) -> bool:
        return self._finished

    def ready_events(self) -> list[TokenEvent]:
        """Events that have already arrived, without waiting (to coalesce small writes)."""
        events = []
        while not self._finished and not self._queue.empty():
            event = self._accept(self._queue.get_nowait())
            if event is not None:
                events.append(event)
        return events

    def _accept(self, item: TokenEvent | Admitted) -> TokenEvent | None:
        if isinstance(item, Admitted):
            if self._observer:
                self._observer.on_admitted(self.stats)
            return None
        if item.finish_reason is not None:
            self._finish(item.finish_reason)
        elif self._observer:
            self._observer.on_token(item, self.stats)
        return item

    async def __aiter__(self) -> AsyncIterator[TokenEvent]:
        while not self._finished:
            yield await self.next_event()

    def cancel(self) -> None:
        """Stop generating (the client went away); safe to call more than once."""
        self.cancelled.set()
        if not self._finished:
            self.stats.finished_at = time.monotonic()
            self._finish("cancelled")

    def _finish(self, reason: FinishReason) -> None:
        self._finished = True
        self.stats.finish_reason = reason
        if self._observer:
            self._observer.on_finished(self.stats)
