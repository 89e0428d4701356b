"""The model-owner thread: one per loaded (model, device), loading and generating.

MLX streams and torch's inference mode are thread-local, and generation must never
block the event loop, so each model gets one long-lived thread that loads the backend
and then drives its Batcher (backends/base.py): admitted requests join it, each turn is
one step() that advances every running request by at most one token, and a request
leaves it when it ends or is cancelled -- a cancelled one before its next step. A
ContinuousBackend brings its own batcher (the torch engine: scheduler, paged KV cache,
chunked prefill, prefix reuse; MLX over mlx-lm's caches); a DecodingBackend's requests
are stepped in turn by inferd/decodings.py.
Work crosses threads in one direction through a thread-safe inbox and comes back
through `loop.call_soon_threadsafe` into each request's asyncio queue.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from inferd.backends.base import (
    Backend,
    BackendError,
    Batcher,
    ModelInfo,
    SamplingParams,
    StepResult,
    TokenEvent,
)
from inferd.decodings import DecodingBatcher
from inferd.heap import freeze_loaded_objects
from inferd.stream import Admitted, GenerationObserver, Stream
from inferd.tracker import RequestTracker

log = logging.getLogger("inferd.engine")
T = TypeVar("T")
# An idle worker gathers arrivals for at most this many arrival windows (see _take_work).
GATHER_WINDOWS = 8
WorkerState = Literal["unloaded", "loading", "ready", "failed"]


@dataclass(slots=True)
class _Call:
    fn: Callable[[Backend], Any]
    future: Future[Any]


@dataclass(slots=True)
class _Open:
    """A request whose prompt the owner thread encodes and then queues, in one turn."""

    stream: Stream
    encode: Callable[[Backend], Sequence[int]]
    future: Future[None]


def client_message(error: Exception) -> str:
    """What a client may see of a generation failure: a BackendError's message is meant
    for users; anything else (a torch or MLX internal error) stays in the log."""
    if isinstance(error, BackendError):
        return str(error)
    return f"internal error ({type(error).__name__}); see the server log"


def make_batcher(backend: Backend, max_running: int) -> Batcher:
    """The backend's own batcher when it has one, else its Decodings stepped in turn."""
    own = getattr(backend, "batcher", None)
    if own is not None:
        return own(max_running)
    return DecodingBatcher(backend)  # type: ignore[arg-type]


class ModelWorker:
    """Owns one backend on its own thread; the async side submits work and awaits it."""

    def __init__(
        self,
        label: str,
        make_backend: Callable[[], Backend],
        max_concurrent: int,
        arrival_window: float = 0.0,
    ) -> None:
        """`arrival_window`: seconds an idle worker waits for the next request after one
        arrives, so that requests sent together start in one step (see _take_work)."""
        self.label = label
        self.state: WorkerState = "unloaded"
        self.error: str | None = None
        self.info: ModelInfo | None = None
        self._make_backend = make_backend
        self._max_concurrent = max_concurrent
        self.arrival_window = arrival_window
        self._inbox: queue.SimpleQueue[Stream | _Call | _Open | None] = queue.SimpleQueue()
        self._loaded: Future[ModelInfo] = Future()
        self._waiting: deque[Stream] = deque()
        self._active: dict[int, RequestTracker] = {}  # by sequence id, in admission order
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None
        self._backend: Backend | None = None
        self._lock = threading.Lock()

    # -- called from the event loop -------------------------------------------------
    def start(self) -> None:
        """Begin loading in the background (idempotent)."""
        with self._lock:
            if self._thread is not None:
                return
            self.state = "loading"
            self._thread = threading.Thread(
                target=self._run, name=f"inferd-{self.label}", daemon=True
            )
            self._thread.start()

    async def ready(self) -> ModelInfo:
        """Wait for the model to load; raises the load error if it failed."""
        self.start()
        # Shielded: a waiter that is cancelled (its client went away) must not cancel the
        # shared future, or the owner thread would die setting its result.
        return await asyncio.shield(asyncio.wrap_future(self._loaded))

    async def call(self, fn: Callable[[Backend], T]) -> T:
        """Run `fn(backend)` on the owner thread between decoding steps (e.g. tokenising)."""
        future: Future[T] = Future()
        self._inbox.put(_Call(fn, future))
        return await asyncio.wrap_future(future)

    async def open(
        self,
        encode: Callable[[Backend], Sequence[int]],
        params: SamplingParams,
        observer: GenerationObserver | None = None,
    ) -> Stream:
        """Start generating from the prompt `encode(backend)` returns (it runs on the owner
        thread, which may be mid-step); raises what `encode` raises.

        The owner thread queues the request as soon as it is encoded: with `call` then
        `submit`, the ids would travel to the event loop and back, and a request that
        arrived during a step would miss the next one too."""
        stream = Stream((), params, observer)
        future: Future[None] = Future()
        self._inbox.put(_Open(stream, encode, future))
        try:
            await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            stream.cancelled.set()  # queued meanwhile: dropped when it would be admitted
            raise
        return stream

    def submit(
        self,
        prompt_ids: Sequence[int],
        params: SamplingParams,
        observer: GenerationObserver | None = None,
    ) -> Stream:
        stream = Stream(prompt_ids, params, observer)
        self._inbox.put(stream)
        return stream

    @property
    def running(self) -> int:
        return len(self._active)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def stop(self) -> None:
        self._inbox.put(None)

    def join(self, timeout: float | None = None) -> bool:
        """Wait (blocking: call it off the loop) for the owner thread to end after stop(),
        which closes the backend; True when it has (or never started)."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- the owner thread -----------------------------------------------------------
    def _run(self) -> None:
        try:
            backend = self._make_backend()
            info = backend.load()
            batcher = make_batcher(backend, self._max_concurrent)
        except Exception as error:  # any load failure must reach /readiness and requests
            log.error("loading %s failed: %s", self.label, error)
            self.error = str(error)
            self.state = "failed"
            self._loaded.set_exception(error)
            self._fail_pending(str(error))
            return
        self._backend = backend
        self.info = info
        freeze_loaded_objects()  # before any request: the model's objects never collected
        self.state = "ready"
        self._loaded.set_result(info)
        log.info("loaded %s (context %d)", self.label, info.context_length)
        while self._take_work(block=not (self._active or self._waiting)):
            self._admit(backend, batcher, info)
            self._step(batcher)
        for seq_id in list(self._active):
            batcher.finish(seq_id)
        # Optional hook: MLX must release its thread-local streams on the thread that used them.
        close = getattr(backend, "close", None)
        if close is not None:
            close()

    def _take_work(self, *, block: bool) -> bool:
        """Move new requests to the queue and run pending calls; False means shut down.

        Idle (`block`), the worker takes what arrives within `arrival_window` of the last
        arrival, up to GATHER_WINDOWS windows in all, before it steps: requests sent
        together reach the inbox one by one as the event loop parses them, and a first
        step started with the first alone would make the others wait for that step.
        Busy, it takes what has arrived and steps at once."""
        try:
            item = self._inbox.get(block=block)
        except queue.Empty:
            return True
        window = self.arrival_window if block else 0.0
        deadline = time.monotonic() + GATHER_WINDOWS * window
        while True:
            if item is None:
                return False
            if isinstance(item, _Call):
                self._run_call(item)
            elif isinstance(item, _Open):
                self._open(item)
            else:
                self._waiting.append(item)
            wait = min(window, deadline - time.monotonic())
            try:
                item = self._inbox.get(timeout=wait) if wait > 0 else self._inbox.get_nowait()
            except queue.Empty:
                return True

    def _run_call(self, call: _Call) -> None:
        if not call.future.set_running_or_notify_cancel():
            return
        try:
            call.future.set_result(call.fn(self._backend))
        except Exception as error:  # the caller gets the exception, the thread lives on
            call.future.set_exception(error)

    def _open(self, item: _Open) -> None:
        if not item.future.set_running_or_notify_cancel():
            return
        try:
            item.stream.set_prompt(item.encode(self._backend))  # type: ignore[arg-type]
        except Exception as error:  # e.g. a prompt too long: the caller answers 400
            item.future.set_exception(error)
            return
        self._waiting.append(item.stream)
        item.future.set_result(None)

    def _fail_pending(self, message: str) -> None:
        """After a failed load, answer whatever was already queued instead of hanging it."""
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, (_Call, _Open)):
                item.future.set_exception(RuntimeError(message))
            elif isinstance(item, Stream):
                item.push(TokenEvent(finish_reason="error", error=message))

    def _admit(self, backend: Backend, batcher: Batcher, info: ModelInfo) -> None:
        while self._waiting and len(self._active) < self._max_concurrent:
            stream = self._waiting.popleft()
            if stream.cancelled.is_set():
                continue
            stream.stats.started_at = time.monotonic()
            stream.push(Admitted())
            seq_id = next(self._ids)
            try:
                tracker = RequestTracker(stream, backend, info)
                batcher.add(seq_id, stream.prompt_ids, tracker.params)
            except Exception as error:
                log.exception("starting a generation on %s failed", self.label)
                stream.push(TokenEvent(finish_reason="error", error=client_message(error)))
                continue
            self._active[seq_id] = tracker

    def _step(self, batcher: Batcher) -> None:
        for seq_id, tracker in list(self._active.items()):
            if tracker.stream.cancelled.is_set():
                # The client went away: free the cache before spending another step on it.
                del self._active[seq_id]
                batcher.finish(seq_id)
        if not self._active:
            return
        try:
            results = batcher.step()
        except Exception as error:
            # The batcher itself broke (not one sequence): nothing it holds can be trusted.
            log.exception("a generation step on %s failed", self.label)
            results = [StepResult(seq_id, error=error) for seq_id in self._active]
        for result in results:
            tracker = self._active.get(result.seq_id)
            if tracker is not None and self._record(tracker, result):
                del self._active[result.seq_id]
                batcher.finish(result.seq_id)  # free its cache before the client hears the end
                tracker.end()

    def _record(self, tracker: RequestTracker, result: StepResult) -> bool:
        """Pass a step's token or error to its request; True when the request is done."""
        try:
            if result.error is not None:
                log.error("generation on %s failed: %s", self.label, result.error)
                return tracker.fail(client_message(result.error))
            return tracker.accept(result.token)  # type: ignore[arg-type]
        except Exception as error:  # e.g. a detokeniser failure stays with its request
            log.exception("generation on %s failed", self.label)
            return tracker.fail(client_message(error))
