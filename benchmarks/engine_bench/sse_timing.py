"""When each token reached the client: SSE streams read chunk by chunk, timestamped.

Two wire formats are understood: inferd's own (`data: <text>` per token, `event: error`
on failure) and the OpenAI one that mlx_lm.server speaks (`data: {json chunk}`, then
`data: [DONE]`). A token is an event that carries text; several events that arrive in
one network read share its timestamp, as they would for any client.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, Literal

import httpx

from inferd.sse import USAGE_HEADER
from inferd.testing.sse import SseDecoder, SseEvent

WireFormat = Literal["inferd", "openai"]
# inferd ends a stream with this comment when asked (sse.USAGE_HEADER): its token count.
USAGE_COMMENT = "usage "
USAGE_HEADERS = {USAGE_HEADER: "true"}


@dataclass(slots=True)
class StreamRecord:
    """One streamed request as its client saw it (perf_counter seconds)."""

    sent_at: float = 0.0
    token_times: list[float] = field(default_factory=list)
    pieces: list[str] = field(default_factory=list)  # each token event's text
    text: str = ""
    status: int | None = None
    error: str | None = None
    finished_at: float | None = None
    session_id: str | None = None
    usage_tokens: int | None = None  # what the server says it generated, when it says

    @property
    def tokens(self) -> int:
        """Text events: a token each, except where the detokenizer held some back and
        sent them as one (see generated)."""
        return len(self.token_times)

    @property
    def generated(self) -> int:
        """Tokens the server says it generated, else the text events counted."""
        return self.usage_tokens if self.usage_tokens is not None else self.tokens

    @property
    def ttft(self) -> float | None:
        return self.token_times[0] - self.sent_at if self.token_times else None

    def gaps(self) -> list[tuple[float, float]]:
        """(start, end) of every wait between two consecutive tokens."""
        return list(pairwise(self.token_times))

    @property
    def failed(self) -> bool:
        return self.error is not None or self.status != 200 or not self.token_times


class TokenTimer:
    """Feeds a record from the raw text of a stream, chunk by chunk, as it arrives."""

    def __init__(self, record: StreamRecord, wire: WireFormat) -> None:
        self.record = record
        self.wire = wire
        self.done = False  # the server said the stream is complete ([DONE])
        self._decoder = SseDecoder()

    def feed(self, at: float, chunk: str) -> None:
        for event in self._decoder.feed(chunk):
            if self.wire == "inferd":
                self._inferd_event(at, event)
            else:
                self._openai_event(at, event)
        for comment in self._decoder.comments:  # inferd's closing `: usage {...}`
            if comment.startswith(USAGE_COMMENT):
                usage = json.loads(comment.removeprefix(USAGE_COMMENT))
                self.record.usage_tokens = usage.get("completion_tokens")
        self._decoder.comments.clear()  # keepalives among them: read each once

    def _token(self, at: float, text: str) -> None:
        if text:
            self.record.token_times.append(at)
            self.record.pieces.append(text)
            self.record.text += text

    def _inferd_event(self, at: float, event: SseEvent) -> None:
        if event.name == "error":
            self.record.error = event.data or "stream failed"
        elif event.name == "message":
            self._token(at, event.data)

    def _openai_event(self, at: float, event: SseEvent) -> None:
        if event.data == "[DONE]":
            self.done = True
            return
        try:
            chunk: Any = json.loads(event.data)
        except ValueError:
            self.record.error = f"not a JSON chunk: {event.data[:80]!r}"
            return
        if not isinstance(chunk, dict):
            self.record.error = f"not a JSON object: {event.data[:80]!r}"
            return
        if "error" in chunk:
            self.record.error = str(chunk["error"])
        if chunk.get("usage"):
            self.record.usage_tokens = chunk["usage"].get("completion_tokens")
        for choice in chunk.get("choices") or []:
            text = choice.get("text") or (choice.get("delta") or {}).get("content") or ""
            self._token(at, text)


async def stream_request(
    client: httpx.AsyncClient,
    url: str,
    body: dict[str, Any],
    wire: WireFormat,
    record: StreamRecord | None = None,
) -> StreamRecord:
    """POST `body` and time its stream into `record` (pass one in to keep what arrived if
    the task is cancelled). Failures are recorded, never raised; cancellation propagates."""
    record = record if record is not None else StreamRecord()
    timer = TokenTimer(record, wire)
    record.sent_at = time.perf_counter()
    try:
        headers = USAGE_HEADERS if wire == "inferd" else None
        async with client.stream("POST", url, json=body, headers=headers) as response:
            record.status = response.status_code
            record.session_id = response.headers.get("x-session-id")
            if response.status_code != 200:
                detail = (await response.aread()).decode(errors="replace")
                record.error = f"HTTP {response.status_code}: {detail[:200]}"
                return record
            async for chunk in response.aiter_text():
                timer.feed(time.perf_counter(), chunk)
        record.finished_at = time.perf_counter()
    except httpx.HTTPError as error:
        record.error = f"{type(error).__name__}: {error}"
    return record
