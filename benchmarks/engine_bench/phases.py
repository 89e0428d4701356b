"""The load a benchmark puts on a running server, over HTTP, as its clients would.

- `concurrent_streams`: N clients stream a completion each, all sent at once.
- `interference`: steady streams, then one long prompt arrives; their token gaps are kept.
- `first_visit` / `revisit`: a chat session's second turn on a long history, timed with its
  prefix cached (first_visit) and on a fresh server that has never seen it (revisit).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from .sse_timing import StreamRecord, WireFormat, stream_request

FOLLOW_UP = "Now summarise all of that in one short sentence."


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how to ask for a streamed completion (inferd's /completions or OpenAI's)."""

    base_url: str
    path: str
    wire: WireFormat
    model: str

    @property
    def url(self) -> str:
        return self.base_url + self.path

    def body(self, prompt: str, max_tokens: int) -> dict[str, Any]:
        # The same fields mean the same on inferd's /completions and OpenAI's.
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "stream": True,
        }
        if self.wire == "openai":  # a closing usage chunk: the server's own token count
            body["stream_options"] = {"include_usage": True}
        return body


def _client(timeout: float, connections: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout),
        limits=httpx.Limits(max_connections=connections + 4, max_keepalive_connections=0),
    )


async def _gather_until(
    tasks: Sequence[asyncio.Task[StreamRecord]], records: Sequence[StreamRecord], timeout: float
) -> None:
    """Wait for every task; past `timeout`, cancel the rest and mark them timed out."""
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for task, record in zip(tasks, records, strict=True):
        if task in pending and record.error is None:
            record.error = f"timed out after {timeout:.0f} s"


async def concurrent_streams(
    endpoint: Endpoint, prompts: Sequence[str], max_tokens: int, timeout: float
) -> list[StreamRecord]:
    """One streamed completion per prompt, all sent at once; each client's record."""
    records = [StreamRecord() for _ in prompts]
    async with _client(timeout, len(prompts)) as client:
        tasks = [
            asyncio.create_task(
                stream_request(client, endpoint.url, endpoint.body(p, max_tokens), endpoint.wire, r)
            )
            for p, r in zip(prompts, records, strict=True)
        ]
        await _gather_until(tasks, records, timeout)
    return records


@dataclass(slots=True)
class InterferenceRun:
    streams: list[StreamRecord]
    long_prompt: StreamRecord
    steady_from: float = 0.0  # when the steady window opened (after warm-up tokens)
    notes: list[str] = field(default_factory=list)


async def _until(condition: Callable[[], bool], deadline: float) -> bool:
    """Poll `condition` until it holds (True) or the monotonic `deadline` passes (False)."""
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def interference(
    endpoint: Endpoint,
    prompts: Sequence[str],
    long_prompt: str,
    *,
    steady_tokens: int,
    stream_budget: int,
    timeout: float,
) -> InterferenceRun:
    """Steady streams, then `long_prompt` arrives: record everyone's token times.

    The streams run with a budget they will not reach and are cut off (disconnected) once
    the long prompt has answered and every stream has had two more tokens, so the gap
    that spans the long prompt's prefill is closed before they stop.
    """
    deadline = time.monotonic() + timeout
    run = InterferenceRun([StreamRecord() for _ in prompts], StreamRecord())
    async with _client(timeout, len(prompts) + 1) as client:
        tasks = [
            asyncio.create_task(
                stream_request(
                    client, endpoint.url, endpoint.body(p, stream_budget), endpoint.wire, r
                )
            )
            for p, r in zip(prompts, run.streams, strict=True)
        ]

        def every_stream_has(counts: Sequence[int], more: int) -> Callable[[], bool]:
            return lambda: (
                any(t.done() for t in tasks)
                or all(r.tokens >= c + more for r, c in zip(run.streams, counts, strict=True))
            )

        try:
            zero = [0] * len(prompts)
            await _until(every_stream_has(zero, 2), deadline)  # all joined and decoding
            run.steady_from = time.perf_counter()
            base = [r.tokens for r in run.streams]
            await _until(every_stream_has(base, steady_tokens), deadline)
            if any(t.done() for t in tasks):
                run.notes.append("a steady stream ended before the long prompt was sent")
            body = endpoint.body(long_prompt, 4)
            long_task = asyncio.create_task(
                stream_request(client, endpoint.url, body, endpoint.wire, run.long_prompt)
            )
            remaining = max(1.0, deadline - time.monotonic())
            await asyncio.wait([long_task], timeout=remaining)
            if not long_task.done():
                long_task.cancel()
                run.long_prompt.error = f"timed out after {timeout:.0f} s"
            after = [r.tokens for r in run.streams]
            await _until(every_stream_has(after, 2), min(deadline, time.monotonic() + 30))
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return run


async def chat_turn(
    client: httpx.AsyncClient,
    base_url: str,
    prompt: str,
    session_id: str | None,
    max_tokens: int,
) -> StreamRecord:
    """One greedy turn on inferd's /chat/completions (kebab-case fields, as API.md has them)."""
    body: dict[str, Any] = {
        "model-name": "bench",
        "prompt": prompt,
        "max-token": max_tokens,
        "temperature": 0.0,
        "repeat-penalty": 1.0,
    }
    if session_id is not None:
        body["session-id"] = session_id
    return await stream_request(client, base_url + "/chat/completions", body, "inferd")


async def _history_length(client: httpx.AsyncClient, base_url: str, session_id: str) -> int:
    reply = await client.get(f"{base_url}/chat/history/{session_id}")
    reply.raise_for_status()
    return len(reply.json())


@dataclass(slots=True)
class PrefixVisit:
    """A session's first visit: its first turn, its second turn (prefix cached), and checks."""

    session_id: str | None
    first_turn: StreamRecord
    second_turn: StreamRecord
    checks: list[str] = field(default_factory=list)  # empty when every check passed


async def first_visit(
    base_url: str, history_prompt: str, answer_tokens: int, timeout: float
) -> PrefixVisit:
    """Turn 1 (the long history), turn 2 (timed, its prefix in the server's reach), then
    roll turn 2 back so a fresh server can be asked exactly the same second turn."""
    async with _client(timeout, 1) as client:
        first = await chat_turn(client, base_url, history_prompt, None, answer_tokens)
        visit = PrefixVisit(first.session_id, first, StreamRecord())
        if first.failed or first.session_id is None:
            visit.checks.append(f"first turn failed: {first.error or 'no session id'}")
            return visit
        sid = first.session_id
        if (count := await _history_length(client, base_url, sid)) != 2:
            visit.checks.append(f"history after turn 1 has {count} messages, expected 2")
        visit.second_turn = await chat_turn(client, base_url, FOLLOW_UP, sid, answer_tokens)
        if (count := await _history_length(client, base_url, sid)) != 4:
            visit.checks.append(f"history after turn 2 has {count} messages, expected 4")
        rollback = await client.post(f"{base_url}/chat/history/{sid}/rollback", json={"amount": 2})
        if rollback.status_code != 200 or rollback.json().get("remaining") != 2:
            visit.checks.append(f"rollback of turn 2 answered {rollback.status_code}")
    return visit


async def chat_warm_up(base_url: str, prompt: str, timeout: float) -> StreamRecord:
    """A short turn in a throwaway session: template and session store used once."""
    async with _client(timeout, 1) as client:
        return await chat_turn(client, base_url, prompt, None, 2)


async def revisit(
    base_url: str, session_id: str, answer_tokens: int, timeout: float
) -> StreamRecord:
    """The same second turn again (history identical after the rollback)."""
    async with _client(timeout, 1) as client:
        return await chat_turn(client, base_url, FOLLOW_UP, session_id, answer_tokens)
