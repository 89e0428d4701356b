"""inferd/tracker.py: a request's tokens on the owner thread, and how it ends."""

from __future__ import annotations

import asyncio
import threading

from inferd.backends.base import GenerationStats, SamplingParams, TokenEvent
from inferd.stream import Stream
from inferd.testing.fakes import FakeBackend
from inferd.tracker import RequestTracker


class EndOnFirstText:
    """An output filter (as a plugin's output transform is) that ends the answer at once."""

    awaits = False

    def apply(self, event: TokenEvent, stats: GenerationStats) -> TokenEvent:
        if event.text and event.finish_reason is None:
            return TokenEvent(text=event.text, finish_reason="content_filter")
        return event


class Filtering:
    output_filter = EndOnFirstText()

    def on_admitted(self, stats: GenerationStats) -> None: ...
    def on_token(self, event: TokenEvent, stats: GenerationStats) -> None: ...
    def on_finished(self, stats: GenerationStats) -> None: ...


async def test_the_engine_ending_too_keeps_the_reason_an_output_filter_gave():
    backend = FakeBackend()
    stream = Stream([1, 2, 3], SamplingParams(max_tokens=1), Filtering())
    tracker = RequestTracker(stream, backend, backend.load())
    first = ord(backend.reply[0])
    on_owner = threading.Thread(target=tracker.accept, args=(first,))  # its last token
    on_owner.start()
    on_owner.join()
    event = await asyncio.wait_for(stream.next_event(), 5)
    assert event.finish_reason == stream.stats.finish_reason == "content_filter"
    # The engine had reached max_tokens in the same step: it ends the request after the
    # filter did, on its own thread, while the client's answer is being written.
    ending = threading.Thread(target=tracker.end)
    ending.start()
    ending.join()
    await asyncio.sleep(0.01)  # the engine's final event reaches the loop
    assert stream.stats.finish_reason == "content_filter"
