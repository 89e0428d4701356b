"""What every generating route shares: pick the worker, take a place in its queue,
build the prompt, start the stream, and record a chat turn in the session store.

Routes (completions.py, chat.py, ws.py) parse their bodies into a ParsedRequest
(inferd/parsed_request.py) and only translate the resulting stream to their transport.
Plugins' `transform_request` hooks run first thing in `start_completion` and
`start_chat`, so every generating route -- whatever its body format or transport --
passes them once, before the model is chosen or the prompt tokenised. Both return once
the engine has admitted the request, so a refusal (queue full or waited too long: 503,
see admission.py) comes before any of the response is sent, whatever the transport. A remote model
(inferd/remote/) is told apart from a local one in one place, `_open`; everything else
here -- and in the routes, sessions and plugins -- is the same for both.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sanic import Request

from inferd import access_log
from inferd.admission import Ticket
from inferd.backends.base import Backend, ChatMessage, ModelInfo
from inferd.config import ModelConfig
from inferd.errors import ApiError, InternalError, NotFound
from inferd.parsed_request import ParsedRequest
from inferd.plugins.base import Generation
from inferd.prompting import chat_prompt, completion_prompt
from inferd.registry import Worker
from inferd.remote.protocol import Prompt
from inferd.remote.worker import RemoteWorker
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
    worker: Worker
    info: ModelInfo


async def resolve(request: Request, model_name: str, device: str | None) -> Target:
    """The loaded worker for a request: 404 unknown model, 400 bad device, 500 load failure;
    a remote model whose upstreams cannot tell its context: their 502/503/504."""
    registry = request.app.ctx.registry
    model = registry.find(model_name)
    device = registry.placement(model, device)
    worker = registry.worker(model.id, device)
    try:
        info = await worker.ready()
    except ApiError:  # a remote model whose upstreams do not answer: 503, say so
        raise
    except Exception as error:
        # With auth on, only key holders see this (unlike the public /readiness).
        raise InternalError(
            f"model {model.name!r} could not be loaded on {device}: {error}"
        ) from None
    return Target(model, device, worker, info)


def _enter(request: Request, target: Target) -> Ticket:
    """A place in the target's queue, or a 503 at once when it is full."""
    return request.app.ctx.admission.gate(target.model, target.device).enter()


async def _open(
    request: Request, target: Target, parsed: ParsedRequest, prompt: Prompt, ticket: Ticket
) -> Stream:
    """Start generating `prompt` (a completion's text, or a chat's messages).

    The one place that tells remote models from local ones: a remote model's upstream
    templates and tokenises the prompt itself; a local one is tokenised on its owner
    thread, within its context window, and queued there at once."""
    generation = Generation(
        request, parsed.endpoint, parsed.transport, target.model.name, target.device, parsed
    )
    observer = ticket.observe(request.app.ctx.plugins.observe(generation))
    worker, info, params = target.worker, target.info, parsed.params
    if isinstance(worker, RemoteWorker):
        stream = await worker.open(prompt, params, observer)
    else:

        def encode(backend: Backend) -> list[int]:
            if isinstance(prompt, str):
                return completion_prompt(backend, info, prompt)
            return chat_prompt(backend, info, prompt, params.max_tokens)[0]

        stream = await worker.open(encode, params, observer)
    access_log.add_generation(request, stream.stats)
    return stream


async def start_completion(request: Request, parsed: ParsedRequest) -> tuple[Target, Stream]:
    parsed = await request.app.ctx.plugins.transform_request(request, parsed)
    target = await resolve(request, parsed.model, parsed.device)
    ticket = _enter(request, target)
    try:
        stream = await _open(request, target, parsed, parsed.prompt or "", ticket)
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
    recorded: bool = False
    # When the session began (ensure's answer): the turn is stored only in that session.
    created: float | None = None

    @property
    def session_id(self) -> str | None:
        return self.parsed.session_id

    async def record(self) -> None:
        """Store the exchange, whatever ended it: a cancelled or failed turn keeps what was
        answered (maybe nothing), so the user's message is never lost and the history
        keeps alternating user/assistant as chat templates expect.

        Called once the generation has ended and before the client is told so (the SSE
        stream's end, `__END__`), so a client that sends its next turn at once finds this
        one in the history; and again in the routes' `finally`, for a turn cut short,
        where a second call does nothing. A store that does not answer in time is
        logged, and the write still finishes in the background.

        A session deleted while the answer streamed stays deleted: the turn is dropped
        (the client still gets its whole answer)."""
        if self.parsed.session_id is None or self.recorded:
            return
        self.recorded = True
        turn = [{"role": m.role, "content": m.content} for m in self.parsed.messages]
        turn.append({"role": "assistant", "content": self.answer})
        session_id, owner = self.parsed.session_id, self.parsed.owner
        try:
            if not await self.sessions.append(session_id, turn, owner, created=self.created):
                log.info("session %s was deleted during the answer: turn not stored", session_id)
        except StoreUnavailable as error:
            log.error("session %s: turn not stored yet: %s", session_id, error)


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
        stream = await _open(request, target, parsed, messages, ticket)
    except BaseException:
        ticket.release()
        raise
    await ticket.admitted(stream)
    created = None
    try:
        # Only a request that will really generate creates (or re-prompts) its session.
        if parsed.session_id is not None:
            session = await sessions.ensure(parsed.session_id, parsed.owner, parsed.system_prompt)
            if session is None:
                raise NotFound(f"session {parsed.session_id!r} not found")
            created = session.created
    except BaseException:
        stream.cancel()
        raise
    return ChatTurn(sessions, parsed, stream, created=created)
