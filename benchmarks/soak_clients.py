"""The soak's clients: each one loops over a random mix of what real clients do.

A client owns its chat sessions (no other client touches them), so it knows exactly
what each session's history must be: after every turn it reads the history back and
compares. A turn it cut off itself (a random disconnect) must be stored with the user
message and an answer that starts with what it received. What differs is counted as
lost (a message missing) or corrupted (a message that is there but wrong).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
from websockets.asyncio.client import connect

from inferd.sse import as_received
from inferd.testing.sse import parse_sse

TURNS_PER_SESSION = 12  # then the session is deleted: histories stay far below max_messages
PROMPTS = ("Once upon a time", "The little dog", "Lily and Ben went", "One day, the sun")
BAD_BODIES = (
    ("/completions", b"{"),  # malformed JSON
    ("/completions", b'{"model": "M", "prompt": 5}'),  # wrong type
    ("/chat/completions", b'{"model-name": "M", "prompt": "x", "max_tokens": 3}'),  # unknown
    ("/completions", b"[1, 2, 3]"),  # not an object
)


@dataclass
class Tally:
    """What all clients saw, added up."""

    requests: Counter[str] = field(default_factory=Counter)  # by kind
    statuses: Counter[int] = field(default_factory=Counter)
    unexpected_5xx: list[str] = field(default_factory=list)
    wrong_statuses: list[str] = field(default_factory=list)  # e.g. a bad body not 400
    refused_503: int = 0  # 503 with Retry-After: load shedding, expected under overload
    transport_errors: Counter[str] = field(default_factory=Counter)
    checked_messages: int = 0
    lost_messages: list[str] = field(default_factory=list)
    corrupted_messages: list[str] = field(default_factory=list)
    late_turns: int = 0  # stored, but visible only a moment after the answer ended

    def status(self, kind: str, code: int, *, retry_after: bool = False) -> None:
        self.requests[kind] += 1
        self.statuses[code] += 1
        if code == 503 and retry_after:
            self.refused_503 += 1
        elif code >= 500:
            self.unexpected_5xx.append(f"{kind}: {code}")

    def response(self, kind: str, response: httpx.Response) -> None:
        self.status(kind, response.status_code, retry_after="retry-after" in response.headers)


@dataclass
class Expected:
    role: str
    content: str
    prefix_only: bool = False  # a turn cut off by the client: stored answer >= received
    over_sse: bool = False  # received over SSE, which carries a CR as a line end (LF)


@dataclass
class OwnSession:
    id: str
    history: list[Expected] = field(default_factory=list)
    turns: int = 0


class SoakClient:
    def __init__(self, number: int, base: str, model: str, tally: Tally, seed: int) -> None:
        self.number = number
        self.base = base
        self.model = model
        self.tally = tally
        self.random = random.Random(seed * 1000 + number)
        self.sessions = [self._new_session() for _ in range(2)]
        self.http = httpx.AsyncClient(base_url=base, timeout=120)

    def _new_session(self) -> OwnSession:
        return OwnSession(f"soak-{self.number}-{time.monotonic_ns()}-{self.random.random():.6f}")

    async def run(self, deadline: float) -> None:
        actions = (
            (self.json_completion, 15),
            (self.sse_completion, 15),
            (self.sse_chat, 25),
            (self.ws_chat, 20),
            (self.sse_chat_cut_off, 10),
            (self.bad_body, 10),
            (self.rollback, 5),
        )
        functions, weights = zip(*actions, strict=True)
        try:
            while time.monotonic() < deadline:
                action = self.random.choices(functions, weights)[0]
                try:
                    await action()
                except (httpx.TransportError, OSError, asyncio.TimeoutError) as error:
                    self.tally.transport_errors[type(error).__name__] += 1
                await asyncio.sleep(self.random.uniform(0, 0.05))
        finally:
            await self.http.aclose()

    # -- stateless ----------------------------------------------------------------------
    def _completion(self, stream: bool) -> dict[str, object]:
        prompt = self.random.choice(PROMPTS)
        return {"model": self.model, "prompt": prompt, "max_tokens": self.random.randint(8, 64),
                "stream": stream}  # fmt: skip

    async def json_completion(self) -> None:
        response = await self.http.post("/completions", json=self._completion(False))
        self.tally.response("json", response)

    async def sse_completion(self) -> None:
        response = await self.http.post("/completions", json=self._completion(True))
        self.tally.response("sse", response)

    async def bad_body(self) -> None:
        path, body = self.random.choice(BAD_BODIES)
        response = await self.http.post(path, content=body.replace(b"M", self.model.encode()))
        self.tally.response("bad body", response)
        if response.status_code != 400:
            self.tally.wrong_statuses.append(f"bad body {body!r} answered {response.status_code}")

    # -- chat turns on own sessions -----------------------------------------------------
    def _session(self) -> OwnSession:
        index = self.random.randrange(len(self.sessions))
        return self.sessions[index]

    def _chat(self, session: OwnSession) -> tuple[dict[str, object], str]:
        prompt = f"{self.random.choice(PROMPTS)} ({self.number}.{session.turns})"
        body = {"model-name": self.model, "prompt": prompt, "session-id": session.id,
                "max-token": self.random.randint(8, 48)}  # fmt: skip
        return body, prompt

    async def sse_chat(self) -> None:
        session = self._session()
        body, prompt = self._chat(session)
        response = await self.http.post("/chat/completions", json=body)
        self.tally.response("sse chat", response)
        if response.status_code == 200:
            answer = parse_sse(response.text).text
            await self._turn_done(session, prompt, answer, cut_off=False, over_sse=True)

    async def sse_chat_cut_off(self) -> None:
        """Disconnect after a few pieces of the answer: a client that goes away."""
        session = self._session()
        body, prompt = self._chat(session)
        body["max-token"] = 64
        received, pieces = "", self.random.randint(1, 4)
        async with self.http.stream("POST", "/chat/completions", json=body) as response:
            self.tally.response("sse cut off", response)
            if response.status_code != 200:
                return
            text = ""
            async for chunk in response.aiter_text():
                text += chunk
                if text.count("\n\n") >= pieces:
                    break
            received = parse_sse(text[: text.rfind("\n\n") + 2]).text
        await self._turn_done(session, prompt, received, cut_off=True, over_sse=True)

    async def ws_chat(self) -> None:
        session = self._session()
        body, prompt = self._chat(session)
        url = self.base.replace("http", "ws", 1) + "/chat/ws"
        async with connect(url, open_timeout=60) as ws:
            await ws.send(json.dumps(body))
            answer = ""
            while True:
                frame = await asyncio.wait_for(ws.recv(), timeout=120)
                if frame == "__END__":
                    break
                if isinstance(frame, str) and frame.startswith("__ERROR__:"):
                    refused = "retry" in frame  # admission / store busy: 503 over a socket
                    self.tally.status("ws chat", 503 if refused else 500, retry_after=refused)
                    return
                answer += frame
        self.tally.status("ws chat", 200)
        await self._turn_done(session, prompt, answer, cut_off=False)

    async def rollback(self) -> None:
        session = self._session()
        if len(session.history) < 2:
            return
        response = await self.http.post(f"/chat/history/{session.id}/rollback", json={"amount": 2})
        self.tally.response("rollback", response)
        if response.status_code == 200:
            del session.history[-2:]

    async def _turn_done(
        self,
        session: OwnSession,
        prompt: str,
        answer: str,
        *,
        cut_off: bool,
        over_sse: bool = False,
    ) -> None:
        reply = Expected("assistant", answer, prefix_only=cut_off, over_sse=over_sse)
        session.history += [Expected("user", prompt), reply]
        session.turns += 1
        await self._verify(session)
        if session.turns >= TURNS_PER_SESSION:
            response = await self.http.delete(f"/chat/history/{session.id}")
            self.tally.response("delete", response)
            self.sessions[self.sessions.index(session)] = self._new_session()

    async def _verify(self, session: OwnSession) -> None:
        """Read the history back; retry briefly before calling a message lost."""
        for attempt in range(20):
            response = await self.http.get(f"/chat/history/{session.id}")
            self.tally.response("history", response)
            stored = response.json() if response.status_code == 200 else []
            problems = _compare(session.history, stored)
            if not problems:
                self.tally.checked_messages += len(session.history)
                self.tally.late_turns += attempt > 0
                return
            await asyncio.sleep(0.1)
        lost, corrupted = problems
        self.tally.lost_messages += [f"{session.id}: {p}" for p in lost]
        self.tally.corrupted_messages += [f"{session.id}: {p}" for p in corrupted]
        session.history = [Expected(m["role"], m["content"]) for m in stored]  # resync


def _compare(expected: list[Expected], stored: list[dict[str, str]]) -> tuple[list, list] | None:
    """None when `stored` is what `expected` says; else (lost, corrupted) descriptions."""
    lost = [f"message {i} ({e.role})" for i, e in enumerate(expected) if i >= len(stored)]
    corrupted = []
    for index, (want, got) in enumerate(zip(expected, stored, strict=False)):
        content = got.get("content", "")
        if want.over_sse:  # SSE cannot carry a CR; the stored text keeps it
            content = as_received(content)
        if got.get("role") != want.role:
            corrupted.append(f"message {index}: role {got.get('role')!r}, not {want.role!r}")
        elif want.prefix_only and not content.startswith(want.content):
            corrupted.append(f"message {index}: cut-off answer does not start as received")
        elif not want.prefix_only and content != want.content:
            corrupted.append(f"message {index}: content differs from what was sent/received")
    if len(stored) > len(expected):
        corrupted.append(f"{len(stored) - len(expected)} unexpected extra messages")
    return (lost, corrupted) if lost or corrupted else None
