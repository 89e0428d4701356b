"""What every generating route shares: pick the worker, take a place in its queue,
build the prompt, start the stream, and record a chat turn in the session store.

Routes (completions.py, chat.py, ws.py) parse their bodies into a ParsedRequest
(inferd/parsed_request.py) and only translate the resulting stream to their transport.
Plugins' `transform_request` hooks run first thing in `start_completion` and
`start_chat`, so every generating route -- whatever its body format or transport --
passes them once, before the model is chosen or the prompt tokenised. Both return once
the engine has admitted the request, so a refusal (queue full or waited too long: 503,
see admission.py) comes before any of the response is sent, whatever the transport.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sanic import Request

from inferd import access_log
from inferd.admission import Ticket
from inferd.backends.base import ChatMessage, ModelInfo
from inferd.config import ModelConfig
from inferd.engine import ModelWorker
from inferd.errors import InternalError, NotFound
from inferd.parsed_request import ParsedRequest
from inferd.plugins.base import Generation
from inferd.prompting import chat_prompt, completion_prompt
from inferd.session_io import AsyncSessionStore, StoreUnavailable
from inferd.stream import Stream

log = logging.getLogger("inferd")


def owner_of(request: Request) -> str | None:
    """The identity sessions belong to (set by the auth plugin; None when auth is off)."""
    return getattr(request.ctx, "owner", None)


@dataclass(slots=True)
class Target:
    model: ModelConfig
    device: str
    worker: ModelWorker
    info: ModelInfo


async def resolve(request: Request, model_name: str, device: str | None) -> Target:
    """The loaded worker for a request: 404 unknown model, 400 bad device, 500 load failure."""
    registry = request.app.ctx.registry
    model = registry.find(model_name)
    device = device or model.device
    worker = registry.worker(model.id, device)
    try:
        info = await worker.ready()
    except Exception as error:
        # With auth on, only key holders see this (unlike the public /readiness).
        raise InternalError(
            f"model {model.name!r} could not be loaded on {device}: {error}"
        ) from None
    return Target(model, device, worker, info)


def _enter(request: Request, target: Target) -> Ticket:
    """A place in the target's queue, or a 503 at once when it is full."""
    return request.app.ctx.admission.gate(target.model, target.device).enter()


def _start(
    request: Request, target: Target, parsed: ParsedRequest, ids: list[int], ticket: Ticket
) -> Stream:
    generation = Generation(
        request, parsed.endpoint, parsed.transport, target.model.name, target.device, parsed
    )
    observer = ticket.observe(request.app.ctx.plugins.observe(generation))
    stream = target.worker.submit(ids, parsed.params, observer)
    access_log.add_generation(request, stream.stats)
    return stream


async def start_completion(request: Request, parsed: ParsedRequest) -> tuple[Target, Stream]:
    parsed = await request.app.ctx.plugins.transform_request(request, parsed)
    target = await resolve(request, parsed.model, parsed.device)
    ticket = _enter(request, target)
    try:
        prompt = parsed.prompt or ""
        ids = await target.worker.call(
            lambda backend: completion_prompt(backend, target.info, prompt)
        )
        stream = _start(request, target, parsed, ids, ticket)
    except BaseException:
        ticket.release()
        raise
    await ticket.admitted(stream)
    return target, stream


@dataclass(slots=True)
class ChatTurn:
    """A chat request in flight: its session (None when stateless), its stream, and the
    answer so far."""

    sessions: AsyncSessionStore
    parsed: ParsedRequest
    stream: Stream
    answer: str = ""

    @property
    def session_id(self) -> str | None:
        return self.parsed.session_id

    async def record(self) -> None:
        """Store the exchange, whatever ended it: a cancelled or failed turn keeps what was
        answered (maybe nothing), so the user's message is never lost and the history
        keeps alternating user/assistant as chat templates expect.

        Called in the routes' `finally`, after the answer went out: a store that does
        not answer in time is logged, and the write still finishes in the background."""
        if self.parsed.session_id is None:
            return
        turn = [{"role": m.role, "content": m.content} for m in self.parsed.messages]
        turn.append({"role": "assistant", "content": self.answer})
        try:
            await self.sessions.append(self.parsed.session_id, turn, self.parsed.owner)
        except StoreUnavailable as error:
            log.error("session %s: turn not stored yet: %s", self.parsed.session_id, error)


def _conversation(history: list[ChatMessage], parsed: ParsedRequest) -> list[ChatMessage]:
    """History, then the new turn; `system_prompt` replaces the history's system message."""
    messages = list(history)
    if parsed.system_prompt is not None:
        if messages and messages[0].role == "system":
            messages = messages[1:]
        messages.insert(0, ChatMessage("system", parsed.system_prompt))
    return [*messages, *parsed.messages]


async def _history(sessions: AsyncSessionStore, parsed: ParsedRequest) -> list[ChatMessage]:
    if parsed.session_id is None:
        return []
    session = await sessions.get(parsed.session_id, parsed.owner)
    if session is None:
        return []
    return [ChatMessage(m["role"], m["content"]) for m in session.messages]  # type: ignore[arg-type]


async def start_chat(request: Request, parsed: ParsedRequest) -> ChatTurn:
    """Validate, load, build the prompt from the session's history and start generating."""
    parsed = await request.app.ctx.plugins.transform_request(request, parsed)
    target = await resolve(request, parsed.model, parsed.device)
    sessions: AsyncSessionStore = request.app.ctx.sessions
    ticket = _enter(request, target)
    try:
        messages = _conversation(await _history(sessions, parsed), parsed)
        max_tokens = parsed.params.max_tokens
        ids, _ = await target.worker.call(
            lambda backend: chat_prompt(backend, target.info, messages, max_tokens)
        )
        stream = _start(request, target, parsed, ids, ticket)
    except BaseException:
        ticket.release()
        raise
    await ticket.admitted(stream)
    try:
        # Only a request that will really generate creates (or re-prompts) its session.
        if (
            parsed.session_id is not None
            and await sessions.ensure(parsed.session_id, parsed.owner, parsed.system_prompt) is None
        ):
            raise NotFound(f"session {parsed.session_id!r} not found")
    except BaseException:
        stream.cancel()
        raise
    return ChatTurn(sessions, parsed, stream)
