"""One admitted request on the owner thread: its tokens become text, and it knows when to end.

The generic stopping rules live here, the same for every backend: end-of-sequence ids,
the token budget (capped by the context window), stop strings (never emitted, even
when split over tokens) and incremental detokenisation. Events go to the request's
Stream. When a request is done, the engine frees its side in the backend first and then
calls end(), so a client that sees the final event knows the memory is free again.
"""

from __future__ import annotations

import dataclasses
import time

from inferd.backends.base import Backend, FinishReason, ModelInfo, SamplingParams, TokenEvent
from inferd.detokenizer import IncrementalDetokenizer
from inferd.stops import StopMatcher
from inferd.stream import Stream


class RequestTracker:
    def __init__(self, stream: Stream, backend: Backend, info: ModelInfo) -> None:
        self.stream = stream
        self.stats = stream.stats
        self.eos_ids = info.eos_token_ids
        # Never decode past the context window, whatever max_tokens says; the backend
        # sizes its buffers from max_tokens, so it only ever sees the capped value.
        self.budget = min(stream.params.max_tokens, info.context_length - len(stream.prompt_ids))
        self.params: SamplingParams = dataclasses.replace(stream.params, max_tokens=self.budget)
        self.detokenizer = IncrementalDetokenizer(backend.decode, stream.prompt_ids)
        self.stops = StopMatcher(self.params.stop)
        self._ending: tuple[FinishReason, bool, str | None] | None = None

    def accept(self, token: int) -> bool:
        """Push the text of a token decoded for this request; True when it is finished."""
        now = time.monotonic()
        if self.stats.first_token_at is None:
            self.stats.first_token_at = now
        if token in self.eos_ids:
            return self._finished("stop")
        self.stats.generated_tokens += 1
        text, hit_stop = self.stops.push(self.detokenizer.push(token))
        if text:
            self.stream.push(TokenEvent(text=text, token_id=token))
        if hit_stop:
            return self._finished("stop", flush=False)
        if self.stats.generated_tokens >= self.budget:
            return self._finished("length")
        return False

    def fail(self, error: str) -> bool:
        """The request failed; end() reports the error (without the text held back)."""
        return self._finished("error", flush=False, error=error)

    def end(self) -> None:
        """Send the held-back text (unless the ending says not to) and the final event."""
        reason, flush, error = self._ending or ("cancelled", False, None)
        if flush:
            text, _ = self.stops.push(self.detokenizer.flush())
            text += self.stops.flush()
            if text:
                self.stream.push(TokenEvent(text=text))
        # The stream records the reason when its loop takes this event: an output filter
        # may already have ended the answer there, and its reason is what the client got.
        if self.stats.finished_at is None:
            self.stats.finished_at = time.monotonic()
        self.stream.push(TokenEvent(finish_reason=reason, error=error, stats=self.stats))

    def _finished(self, reason: FinishReason, *, flush: bool = True, error: str | None = None):
        self._ending = (reason, flush, error)
        return True
