"""One generation on one upstream: open its stream, then relay its chunks into a Stream.

`UpstreamCall.open` returns the first chunk that says something (text, an end or the
usage), so every failure before the first token -- unreachable, an error status, too
slow -- is still an exception, which the worker can answer with an HTTP status or try
on another upstream. After it, `relay` pushes TokenEvents until the upstream ends; a
failure then ends the stream with an error event. Every wait is bounded by the model's
`timeout`: the first token's as a whole (an upstream that only sends keepalive comments
fails too), each later one by the HTTP client's read timeout -- an upstream that sends
nothing is never waited on forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import httpx
from httpx_sse import EventSource, SSEError

from inferd.backends.base import FinishReason, TokenEvent
from inferd.remote.protocol import (
    Chunk,
    UpstreamFailure,
    UpstreamRequest,
    failure_of_error,
    failure_of_status,
    read_chunk,
)
from inferd.remote.upstreams import Upstream
from inferd.stream import Stream

# Seconds to read what follows `data: [DONE]` (the body's end), so that the connection
# goes back to the pool for the next request instead of being closed.
DRAIN_TIMEOUT = 1.0
_DONE = Chunk()  # the marker _chunks yields at `data: [DONE]`


class UpstreamCall:
    """One streaming request to one upstream."""

    def __init__(self, client: httpx.AsyncClient, upstream: Upstream, timeout: float) -> None:
        self.client = client
        self.upstream = upstream
        self.timeout = timeout
        self._response: httpx.Response | None = None
        self._events: AsyncIterator[Chunk] | None = None
        self._done = False  # the upstream sent `data: [DONE]`
        self.answered = False  # the whole answer was relayed: nothing left to cancel

    async def open(self, request: UpstreamRequest, headers: dict[str, str]) -> Chunk | None:
        """Send the request; the first chunk that says something (None: an empty stream)."""
        try:
            return await asyncio.wait_for(self._open(request, headers), self.timeout)
        except UpstreamFailure:
            raise
        except (httpx.HTTPError, SSEError, asyncio.TimeoutError, TimeoutError) as error:
            raise failure_of_error(error, self.timeout) from None

    async def _open(self, request: UpstreamRequest, headers: dict[str, str]) -> Chunk | None:
        outgoing = self.client.build_request(
            "POST", self.upstream.url + request.path, json=request.body, headers=headers
        )
        self._response = await self.client.send(outgoing, stream=True)
        if self._response.status_code != 200:
            body = await self._response.aread()
            raise failure_of_status(self._response.status_code, body)
        self._events = self._chunks(self._response)
        async for chunk in self._events:
            if chunk is _DONE:
                self._done = True
                return None
            if chunk.says_something:
                return chunk
        return None

    @staticmethod
    async def _chunks(response: httpx.Response) -> AsyncIterator[Chunk]:
        """The stream's chunks, then _DONE at `data: [DONE]`; iterating on after _DONE
        reads the rest of the body, so that the connection can be reused."""
        answered = done = False
        async for event in EventSource(response).aiter_sse():
            if done:
                continue  # after [DONE]: only the body's end is left
            if event.data == "[DONE]":
                done = True
                yield _DONE
            elif event.data:
                chunk = read_chunk(event.data)
                answered = answered or chunk.finish_reason is not None
                yield chunk
        if not (done or answered):  # a body that simply stopped: the upstream died
            raise UpstreamFailure(502, "ended its stream before the answer did", retry=True)

    async def next(self) -> Chunk | None:
        """The next chunk (None at the end); UpstreamFailure when the upstream fails.

        The client's read timeout bounds the wait: a silent upstream fails after
        `timeout` seconds (a task per token for asyncio.wait_for would cost more than
        the rest of the relay)."""
        assert self._events is not None, "open() first"
        try:
            chunk = await anext(self._events, None)
        except UpstreamFailure:
            raise
        except (httpx.HTTPError, SSEError, asyncio.TimeoutError, TimeoutError) as error:
            raise failure_of_error(error, self.timeout) from None
        if chunk is _DONE:
            self._done = True
            return None
        return chunk

    async def close(self) -> None:
        """Close the response. After `[DONE]` the body's end is read first, so the
        connection goes back to the pool; otherwise it is dropped, which tells the
        upstream to stop generating."""
        if self._response is None:
            return
        try:
            if self._done and self._events is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._drain(self._events), DRAIN_TIMEOUT)
        finally:
            await self._response.aclose()

    @staticmethod
    async def _drain(events: AsyncIterator[Chunk]) -> None:
        async for _ in events:
            pass


async def relay(call: UpstreamCall, first: Chunk | None, stream: Stream) -> None:
    """Push the upstream's answer into `stream`, from its first chunk to its end.

    The caller closes `call`; a cancelled relay (the client went away) pushes nothing
    more."""
    stats = stream.stats
    finish: FinishReason = "stop"
    chunk = first
    try:
        while chunk is not None:
            if chunk.text:
                if stats.first_token_at is None:
                    stats.first_token_at = time.monotonic()
                stats.generated_tokens += 1  # upstreams send one token per chunk
                stream.push_on_loop(TokenEvent(text=chunk.text))
            if chunk.finish_reason is not None:
                finish = chunk.finish_reason
            if chunk.prompt_tokens is not None:
                stats.prompt_tokens = chunk.prompt_tokens
            if chunk.completion_tokens is not None:
                stats.generated_tokens = chunk.completion_tokens
            chunk = await call.next()
    except UpstreamFailure as failure:
        stats.finished_at = time.monotonic()
        message = f"upstream {call.upstream.url} {failure.reason} in mid-answer"
        stream.push_on_loop(TokenEvent(finish_reason="error", error=message, stats=stats))
        raise
    stats.finished_at = time.monotonic()
    call.answered = True
    stream.push_on_loop(TokenEvent(finish_reason=finish, stats=stats))
