"""inferd/stream.py: the observer's output filter runs on every event, before anyone
sees it, and may end the stream (the engine is then told to stop)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from inferd.backends.base import GenerationStats, SamplingParams, TokenEvent
from inferd.stream import Stream


class Filter:
    """Upper-cases text; ends the stream at "!" (as a plugin's stop would)."""

    def __init__(self, awaits: bool) -> None:
        self.awaits = awaits
        self.seen: list[TokenEvent] = []

    def apply(self, event: TokenEvent, stats: GenerationStats) -> TokenEvent:
        self.seen.append(event)
        if "!" in event.text:
            return TokenEvent(text=event.text.upper(), finish_reason="content_filter", stats=stats)
        return replace(event, text=event.text.upper())

    async def apply_async(self, event: TokenEvent, stats: GenerationStats) -> TokenEvent:
        await asyncio.sleep(0)
        return self.apply(event, stats)


class Observer:
    def __init__(self, output_filter: Filter | None = None) -> None:
        self.output_filter = output_filter
        self.calls: list[str] = []

    def on_admitted(self, stats: GenerationStats) -> None:
        self.calls.append("admitted")

    def on_token(self, event: TokenEvent, stats: GenerationStats) -> None:
        self.calls.append(f"token:{event.text}")

    def on_finished(self, stats: GenerationStats) -> None:
        self.calls.append(f"finished:{stats.finish_reason}")


async def pushed(stream: Stream, *events: TokenEvent) -> None:
    """Push as the owner thread does, and let the loop take the events in."""
    for event in events:
        stream.push(event)
    await asyncio.sleep(0)


async def read_all(stream: Stream) -> list[TokenEvent]:
    return [event async for event in stream]


async def test_a_synchronous_filter_rewrites_and_may_end_the_stream():
    observer = Observer(Filter(awaits=False))
    stream = Stream([1, 2], SamplingParams(), observer)
    await pushed(stream, TokenEvent(text="ab"), TokenEvent(text="c!d"), TokenEvent(text="never"))
    events = await read_all(stream)
    assert [(e.text, e.finish_reason) for e in events] == [("AB", None), ("C!D", "content_filter")]
    assert observer.calls == ["token:AB", "token:C!D", "finished:content_filter"]
    assert stream.cancelled.is_set()  # the engine drops the request
    assert stream.stats.finish_reason == "content_filter"
    assert stream.stats.finished_at is not None
    stream.cancel()  # the route's `finally`: nothing more happens
    assert observer.calls[-1] == "finished:content_filter"


async def test_ready_events_are_filtered_too():
    stream = Stream([1], SamplingParams(), Observer(Filter(awaits=False)))
    await pushed(
        stream, TokenEvent(text="x"), TokenEvent(text="y"), TokenEvent(finish_reason="stop")
    )
    assert [e.text for e in stream.ready_events()] == ["X", "Y", ""]
    assert stream.finished


async def test_an_awaited_filter_runs_in_next_event_and_ready_events_hands_out_the_rest():
    output = Filter(awaits=True)
    stream = Stream([1], SamplingParams(), Observer(output))
    await pushed(stream, TokenEvent(text="x"), TokenEvent(text="y"), TokenEvent(text="z"))
    assert stream.ready_events() == []  # nothing was awaited through the filter yet
    assert (await stream.next_event()).text == "X"
    assert [e.text for e in stream.ready_events()] == ["Y", "Z"]  # filtered meanwhile
    await pushed(stream, TokenEvent(text="!"), TokenEvent(text="after the end"))
    assert (await stream.next_event()).finish_reason == "content_filter"
    assert [e.text for e in output.seen] == ["x", "y", "z", "!"]  # nothing past the end
    assert stream.finished and stream.ready_events() == []


async def test_a_cancel_while_the_filter_runs_ends_the_stream_once():
    class Slow(Filter):
        async def apply_async(self, event: TokenEvent, stats: GenerationStats) -> TokenEvent:
            stream.cancel()  # the client went away meanwhile
            return self.apply(event, stats)

    observer = Observer(Slow(awaits=True))
    stream = Stream([1], SamplingParams(), observer)
    await pushed(stream, TokenEvent(text="x"))
    event = await stream.next_event()
    assert event.finish_reason == "cancelled"
    assert observer.calls == ["finished:cancelled"]


async def test_without_a_filter_events_pass_unchanged():
    observer = Observer()
    stream = Stream([1], SamplingParams(), observer)
    await pushed(stream, TokenEvent(text="x!"), TokenEvent(finish_reason="length"))
    events = await read_all(stream)
    assert [(e.text, e.finish_reason) for e in events] == [("x!", None), ("", "length")]
    assert observer.calls == ["token:x!", "finished:length"]
    assert not stream.cancelled.is_set()
