"""The event-loop side of one generation: an async iterator of TokenEvents.

The model-owner thread (inferd/engine.py) pushes events into a Stream through
`loop.call_soon_threadsafe`; the route that started the generation awaits them. The
plugins' lifecycle callbacks (a GenerationObserver) fire as the events are consumed, on
the event loop, so they see exactly what the client is sent.

An observer may also offer an `output_filter` (the plugins' output transforms,
inferd/output_transforms.py): every event passes through it before anyone sees it, so
its text is what the client and the stored history get. It may end the stream early
(the engine then drops the request), and the final event may then carry text.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol

from inferd.backends.base import FinishReason, GenerationStats, SamplingParams, TokenEvent


class GenerationObserver(Protocol):
    """Lifecycle callbacks of one generation, called on the event loop."""

    def on_admitted(self, stats: GenerationStats) -> None: ...
    def on_token(self, event: TokenEvent, stats: GenerationStats) -> None: ...
    def on_finished(self, stats: GenerationStats) -> None: ...


class OutputFilter(Protocol):
    """Rewrites each event before it is delivered (an observer's `output_filter`)."""

    awaits: bool  # True: use apply_async (some transform must be awaited)

    def apply(self, event: TokenEvent, stats: GenerationStats) -> TokenEvent: ...
    async def apply_async(self, event: TokenEvent, stats: GenerationStats) -> TokenEvent: ...


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
        output: OutputFilter | None = getattr(observer, "output_filter", None)
        # Synchronous filters run as events are accepted; awaited ones in next_event.
        self._filter = output.apply if output is not None and not output.awaits else None
        self._async_filter = output.apply_async if output is not None and output.awaits else None
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[TokenEvent | Admitted] = asyncio.Queue()
        # With an awaited filter: items already filtered, not yet delivered.
        self._prefiltered: deque[TokenEvent | Admitted] = deque()
        self._filtered_end = False
        self._taken = asyncio.Event()  # admitted, or ended without being admitted
        self._finished = False
        self._on_cancel: list[Callable[[], None]] = []

    def set_prompt(self, prompt_ids: Sequence[int]) -> None:
        """The prompt, once encoded (ModelWorker.open encodes it after creating the stream)."""
        self.prompt_ids = list(prompt_ids)
        self.stats.prompt_tokens = len(self.prompt_ids)

    def when_cancelled(self, callback: Callable[[], None]) -> None:
        """Call `callback` on the event loop the moment the generation is cancelled (a
        remote engine closes its upstream request then, instead of at its next step)."""
        self._on_cancel.append(callback)

    def _stop_engine(self) -> None:
        self.cancelled.set()
        callbacks, self._on_cancel = self._on_cancel, []
        for callback in callbacks:
            callback()

    def push_on_loop(self, item: TokenEvent | Admitted) -> None:
        """Called on the event loop itself (a remote engine's relay): no thread hop."""
        self._arrive(item)

    def push(self, item: TokenEvent | Admitted) -> None:
        """Called from the owner thread."""
        try:
            self._loop.call_soon_threadsafe(self._arrive, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self.cancelled.set()

    def _arrive(self, item: TokenEvent | Admitted) -> None:
        if isinstance(item, Admitted) or item.finish_reason is not None:
            self._taken.set()
        self._queue.put_nowait(item)

    async def wait_admitted(self) -> None:
        """Until the engine admits this request, or ends it without admitting it (a load
        failure): the moment it stops waiting in the queue."""
        await self._taken.wait()

    async def next_event(self) -> TokenEvent:
        """The next token or the final event; lifecycle callbacks fire as events arrive."""
        while True:
            if self._async_filter is None:
                item = await self._queue.get()
            else:
                item = await self._next_filtered()
                if self._finished:  # cancelled while the filter ran
                    return TokenEvent(finish_reason="cancelled")
            event = self._accept(item)
            if event is not None:
                return event

    @property
    def finished(self) -> bool:
        return self._finished

    def ready_events(self) -> list[TokenEvent]:
        """Events that have already arrived, without waiting (to coalesce small writes).

        With an awaited filter: those that `next_event` has already filtered."""
        events = []
        while not self._finished:
            if self._async_filter is not None:
                if not self._prefiltered:
                    break
                item = self._prefiltered.popleft()
            elif self._queue.empty():
                break
            else:
                item = self._queue.get_nowait()
            event = self._accept(item)
            if event is not None:
                events.append(event)
        return events

    async def _next_filtered(self) -> TokenEvent | Admitted:
        """The next item through the awaited filter. Whatever else has arrived is filtered
        too, in order, so that ready_events can hand it out without waiting."""
        if not self._prefiltered:
            await self._prefilter(await self._queue.get())
            while not self._queue.empty() and not self._filtered_end:
                await self._prefilter(self._queue.get_nowait())
        return self._prefiltered.popleft()

    async def _prefilter(self, item: TokenEvent | Admitted) -> None:
        if isinstance(item, TokenEvent) and self._async_filter is not None:
            item = self._filtered(item, await self._async_filter(item, self.stats))
            self._filtered_end = item.finish_reason is not None
        self._prefiltered.append(item)

    def _accept(self, item: TokenEvent | Admitted) -> TokenEvent | None:
        if isinstance(item, Admitted):
            if self._observer:
                self._observer.on_admitted(self.stats)
            return None
        if self._filter is not None:
            item = self._filtered(item, self._filter(item, self.stats))
        if self._observer and (item.text or item.finish_reason is None):
            self._observer.on_token(item, self.stats)
        if item.finish_reason is not None:
            self._finish(item.finish_reason)
        return item

    def _filtered(self, original: TokenEvent, filtered: TokenEvent) -> TokenEvent:
        if filtered.finish_reason is not None and original.finish_reason is None:
            # The filter ended the stream: the engine must stop generating for it.
            self._stop_engine()
            self.stats.finished_at = time.monotonic()
        return filtered

    async def __aiter__(self) -> AsyncIterator[TokenEvent]:
        while not self._finished:
            yield await self.next_event()

    def cancel(self) -> None:
        """Stop generating (the client went away); safe to call more than once."""
        self._stop_engine()
        self._taken.set()
        if not self._finished:
            self.stats.finished_at = time.monotonic()
            self._finish("cancelled")

    def _finish(self, reason: FinishReason) -> None:
        self._finished = True
        self.stats.finish_reason = reason
        if self._observer:
            self._observer.on_finished(self.stats)
