"""Doubles for tests/test_engine*.py: a fake backend whose decodings log the schedule (and
can hold, fail or refuse one), an observer that records what it hears, and helpers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

from inferd.backends.base import BackendError, GenerationStats, SamplingParams, TokenEvent
from inferd.stream import Stream
from inferd.testing.fakes import FakeBackend, FakeDecoding
from tests.streams import wait_for

LABEL = "fake@cpu"
THREAD = f"inferd-{LABEL}"


class LabelledDecoding(FakeDecoding):
    """Logs its prompt text on every step, so tests can see the schedule."""

    def __init__(self, backend: LabelledBackend, params: SamplingParams, label: str) -> None:
        super().__init__(backend, params)
        self.label = label

    def step(self) -> int:
        self.backend.schedule.append(self.label)
        if self.backend.hold is not None and self.position == 0:
            self.backend.hold.wait(5)  # a first step that lasts until the test lets it end
        if self.label == self.backend.fail_label and self.position >= 2:
            raise BackendError(f"{self.label} broke")
        return super().step()


class LabelledBackend(FakeBackend):
    def __init__(self, *, fail_label: str | None = None, refuse_label: str | None = None, **kw):
        super().__init__(**kw)
        self.schedule: list[str] = []
        self.fail_label = fail_label
        self.refuse_label = refuse_label
        self.hold: threading.Event | None = None

    def start(self, prompt_ids: Sequence[int], params: SamplingParams) -> LabelledDecoding:
        super().start(prompt_ids, params)
        label = "".join(chr(i) for i in prompt_ids)
        if label == self.refuse_label:
            raise BackendError(f"cannot start {label}")
        return LabelledDecoding(self, params, label)


class RecordingObserver:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.finished: GenerationStats | None = None

    def on_admitted(self, stats: GenerationStats) -> None:
        self.calls.append("admitted")

    def on_token(self, event: TokenEvent, stats: GenerationStats) -> None:
        self.calls.append("token")

    def on_finished(self, stats: GenerationStats) -> None:
        self.calls.append("finished")
        self.finished = stats


def prompt_ids(text: str) -> list[int]:
    return [ord(c) for c in text]


def sampling(**fields) -> SamplingParams:
    return SamplingParams(**{"max_tokens": 1000, **fields})


async def collect(stream: Stream) -> tuple[str, TokenEvent]:
    """All text of a stream and its final event."""

    async def run() -> tuple[str, TokenEvent]:
        pieces = []
        async for event in stream:
            pieces.append(event.text)
            last = event
        return "".join(pieces), last

    return await asyncio.wait_for(run(), timeout=5)


def encoding(text: str):
    """An `encode` for ModelWorker.open that logs "encode <text>" in the schedule."""

    def encode(backend: LabelledBackend) -> list[int]:
        backend.schedule.append(f"encode {text}")
        return prompt_ids(text)

    return encode


async def open_during_a_step(make_worker, max_tokens: int, arrival_window: float = 0.0):
    """A worker whose first step (request A's) is held while request B is opened:
    (backend, worker, A's stream, B's opening task); the caller lets the step end."""
    backend = LabelledBackend()
    backend.hold = threading.Event()
    worker = make_worker(backend, arrival_window=arrival_window)
    await worker.ready()
    first = worker.submit(prompt_ids("A"), sampling(max_tokens=max_tokens))
    await wait_for(lambda: backend.schedule == ["A"])  # A's first step runs, held
    opening = asyncio.ensure_future(worker.open(encoding("B"), sampling(max_tokens=max_tokens)))
    await asyncio.sleep(0.05)
    return backend, worker, first, opening
