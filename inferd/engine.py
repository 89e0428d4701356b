"""The model-owner thread: one per loaded (model, device), loading and decoding.

MLX streams and torch's inference mode are thread-local, and generation must never
block the event loop, so each model gets one long-lived thread that loads the backend
and then decodes every admitted request round-robin, one token each per turn: a long
answer never starves a short one, and a cancelled request is dropped before its next
step. When the backend has the optional step_many() (backends/base.py), a turn is one
call for all active requests, so the backend can decode them in one forward pass. Work
crosses threads in one direction through a thread-safe inbox and comes back through
`loop.call_soon_threadsafe` into each request's asyncio queue.
"""

from __future__ import annotations

import asyncio
import dataclasses
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
    Decoding,
    FinishReason,
    ModelInfo,
    SamplingParams,
    TokenEvent,
)
from inferd.detokenizer import IncrementalDetokenizer
from inferd.stops import StopMatcher
from inferd.stream import Admitted, GenerationObserver, Stream

log = logging.getLogger("inferd.engine")
T = TypeVar("T")
WorkerState = Literal["unloaded", "loading", "ready", "failed"]


@dataclass(slots=True)
class _Call:
    fn: Callable[[Backend], Any]
    future: Future[Any]


class _Sequence:
    """Owner-thread state of one admitted request: applies the generic stopping rules."""

    def __init__(self, stream: Stream, backend: Backend, info: ModelInfo) -> None:
        self.stream = stream
        self.stats = stream.stats
        self.eos_ids = info.eos_token_ids
        # Never decode past the context window, whatever max_tokens says; the backend
        # sizes its buffers from max_tokens, so it only ever sees the capped value.
        self.budget = min(stream.params.max_tokens, info.context_length - len(stream.prompt_ids))
        self.params = dataclasses.replace(stream.params, max_tokens=self.budget)
        self.detokenizer = IncrementalDetokenizer(backend.decode, stream.prompt_ids)
        self.stops = StopMatcher(self.params.stop)
        self.decoding = backend.start(stream.prompt_ids, self.params)  # last: it holds a cache

    def advance(self) -> bool:
        """Decode one token and push its text; True when the request is finished."""
        return self.accept(self.decoding.step())

    def accept(self, token: int) -> bool:
        """Push the text of a token decoded for this request; True when it is finished."""
        now = time.monotonic()
        if self.stats.first_token_at is None:
            self.stats.first_token_at = now
        if token in self.eos_ids:
            return self.finish("stop")
        self.stats.generated_tokens += 1
        text, hit_stop = self.stops.push(self.detokenizer.push(token))
        if text:
            self.stream.push(TokenEvent(text=text, token_id=token))
        if hit_stop:
            return self.finish("stop", flush=False)
        if self.stats.generated_tokens >= self.budget:
            return self.finish("length")
        return False

    def finish(self, reason: FinishReason, *, flush: bool = True, error: str | None = None) -> bool:
        if flush:
            text, _ = self.stops.push(self.detokenizer.flush())
            text += self.stops.flush()
            if text:
                self.stream.push(TokenEvent(text=text))
        self.decoding.close()
        self.stats.finished_at = time.monotonic()
        self.stats.finish_reason = reason
        self.stream.push(TokenEvent(finish_reason=reason, error=error, stats=self.stats))
        return True


def client_message(error: Exception) -> str:
    """What a client may see of a generation failure: a BackendError's message is meant
    for users; anything else (a torch or MLX internal error) stays in the log."""
    if isinstance(error, BackendError):
        return str(error)
    return f"internal error ({type(error).__name__}); see the server log"


class ModelWorker:
    """Owns one backend on its own thread; the async side submits work and awaits it."""

    def __init__(
        self,
        label: str,
        make_backend: Callable[[], Backend],
        max_concurrent: int,
        *,
        batch_steps: bool = True,
    ) -> None:
        """batch_steps=False ignores a backend's step_many() (for benchmarks and tests)."""
        self.label = label
        self.state: WorkerState = "unloaded"
        self.error: str | None = None
        self.info: ModelInfo | None = None
        self._make_backend = make_backend
        self._max_concurrent = max_concurrent
        self._batch_steps = batch_steps
        self._inbox: queue.SimpleQueue[Stream | _Call | None] = queue.SimpleQueue()
        self._loaded: Future[ModelInfo] = Future()
        self._waiting: deque[Stream] = deque()
        self._active: list[_Sequence] = []
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
        except Exception as error:  # any load failure must reach /readiness and requests
            log.error("loading %s failed: %s", self.label, error)
            self.error = str(error)
            self.state = "failed"
            self._loaded.set_exception(error)
            self._fail_pending(str(error))
            return
        self._backend = backend
        self.info = info
        self.state = "ready"
        self._loaded.set_result(info)
        log.info("loaded %s (context %d)", self.label, info.context_length)
        while self._take_work(block=not (self._active or self._waiting)):
            self._admit(backend, info)
            self._step_all()
        # Optional hook: MLX must release its thread-local streams on the thread that used them.
        close = getattr(backend, "close", None)
        if close is not None:
            close()

    def _take_work(self, *, block: bool) -> bool:
        """Move new requests to the queue and run pending calls; False means shut down."""
        try:
            item = self._inbox.get(block=block)
        except queue.Empty:
            return True
        while True:
            if item is None:
                return False
            if isinstance(item, _Call):
                self._run_call(item)
            else:
                self._waiting.append(item)
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return True

    def _run_call(self, call: _Call) -> None:
        if not call.future.set_running_or_notify_cancel():
            return
        try:
            call.future.set_result(call.fn(self._backend))
        except Exception as error:  # the caller gets the exception, the thread lives on
            call.future.set_exception(error)

    def _fail_pending(self, message: str) -> None:
        """After a failed load, answer whatever was already queued instead of hanging it."""
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Call):
                item.future.set_exception(RuntimeError(message))
            elif isinstance(item, Stream):
                item.push(TokenEvent(finish_reason="error", error=message))

    def _admit(self, backend: Backend, info: ModelInfo) -> None:
        while self._waiting and len(self._active) < self._max_concurrent:
            stream = self._waiting.popleft()
            if stream.cancelled.is_set():
                continue
            stream.stats.started_at = time.monotonic()
            stream.push(Admitted())
            try:
                self._active.append(_Sequence(stream, backend, info))
            except Exception as error:
                log.exception("starting a generation on %s failed", self.label)
                stream.push(TokenEvent(finish_reason="error", error=client_message(error)))

    def _step_all(self) -> None:
        for sequence in list(self._active):
            if sequence.stream.cancelled.is_set():
                # The client went away: free the cache before spending another step on it.
                sequence.decoding.close()
                self._active.remove(sequence)
        step_many = getattr(self._backend, "step_many", None) if self._batch_steps else None
        if step_many is not None and len(self._active) > 1:
            self._step_batched(step_many)
            return
        for sequence in list(self._active):
            try:
                done = sequence.advance()
            except Exception as error:  # one failing request must not stop the others
                log.exception("generation on %s failed", self.label)
                done = sequence.finish("error", flush=False, error=client_message(error))
            if done:
                self._active.remove(sequence)

    def _step_batched(self, step_many: Callable[[Sequence[Decoding]], list[int]]) -> None:
        """One step_many() call decodes a token for every active sequence."""
        batch = list(self._active)
        try:
            tokens = step_many([sequence.decoding for sequence in batch])
        except Exception as error:
            # A batched forward pass fails as a whole (out of memory, a model bug): the
            # caches of all its sequences are suspect, so all of them end with the error.
            log.exception("batched generation on %s failed", self.label)
            for sequence in batch:
                sequence.finish("error", flush=False, error=client_message(error))
            self._active.clear()
            return
        for sequence, token in zip(batch, tokens, strict=True):
            try:
                done = sequence.accept(token)
            except Exception as error:  # e.g. a detokeniser failure stays with its request
                log.exception("generation on %s failed", self.label)
                done = sequence.finish("error", flush=False, error=client_message(error))
            if done:
                self._active.remove(sequence)
