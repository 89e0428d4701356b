"""What every generating route shares: pick the worker, build the prompt, start the
stream, and record a chat turn in the session store.

Routes (completions.py, chat.py, ws.py) parse their bodies into a ParsedRequest
(inferd/parsed_request.py) and only translate the resulting stream to their transport.
Plugins' `transform_request` hooks run first thing in `start_completion` and
`start_chat`, so every generating route -- whatever its body format or transport --
passes them once, before the model is chosen or the prompt tokenised.
"""

from __future__ import annotations

from dataclasses import dataclass

from sanic import Request

from inferd.backends.base import ChatMessage, ModelInfo
from inferd.config import ModelConfig
from inferd.engine import ModelWorker
from inferd.errors import InternalError, NotFound
from inferd.parsed_request import ParsedRequest
from inferd.plugins.base import Generation
from inferd.prompting import chat_prompt, completion_prompt
from inferd.sessions import SessionStore
from inferd.stream import Stream


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
        raise InternalError(
            f"model {model.name!r} could not be loaded on {device}: {error}"
        ) from None
    return Target(model, device, worker, info)


def _start(request: Request, target: Target, parsed: ParsedRequest, ids: list[int]) -> Stream:
    generation = Generation(
        request, parsed.endpoint, parsed.transport, target.model.name, target.device, parsed
    )
    observer = request.app.ctx.plugins.observe(generation)
    return target.worker.submit(ids, parsed.params, observer)


async def start_completion(request: Request, parsed: ParsedRequest) -> tuple[Target, Stream]:
    parsed = await request.app.ctx.plugins.transform_request(request, parsed)
    target = await resolve(request, parsed.model, parsed.device)
    prompt = parsed.prompt or ""
    ids = await target.worker.call(lambda backend: completion_prompt(backend, target.info, prompt))
    return target, _start(request, target, parsed, ids)


@dataclass(slots=True)
class ChatTurn:
    """A chat request in flight: its session (None when stateless), its stream, and the
    answer so far."""

    sessions: SessionStore
    parsed: ParsedRequest
    stream: Stream
    answer: str = ""

    @property
    def session_id(self) -> str | None:
        return self.parsed.session_id

    def record(self) -> None:
        """Store the exchange, whatever ended it: a cancelled or failed turn keeps what was
        answered (maybe nothing), so the user's message is never lost and the history
        keeps alternating user/assistant as chat templates expect."""
        if self.parsed.session_id is None:
            return
        turn = [{"role": m.role, "content": m.content} for m in self.parsed.messages]
        turn.append({"role": "assistant", "content": self.answer})
        self.sessions.append(self.parsed.session_id, turn, self.parsed.owner)


def _conversation(history: list[ChatMessage], parsed: ParsedRequest) -> list[ChatMessage]:
    """History, then the new turn; `system_prompt` replaces the history's system message."""
    messages = list(history)
    if parsed.system_prompt is not None:
        if messages and messages[0].role == "system":
            messages = messages[1:]
        messages.insert(0, ChatMessage("system", parsed.system_prompt))
    return [*messages, *parsed.messages]


async def start_chat(request: Request, parsed: ParsedRequest) -> ChatTurn:
    """Validate, load, build the prompt from the session's history and start generating."""
    parsed = await request.app.ctx.plugins.transform_request(request, parsed)
    target = await resolve(request, parsed.model, parsed.device)
    sessions: SessionStore = request.app.ctx.sessions
    history: list[ChatMessage] = []
    if parsed.session_id is not None:
        session = sessions.get(parsed.session_id, parsed.owner)
        if session is not None:
            history = [ChatMessage(m["role"], m["content"]) for m in session.messages]  # type: ignore[arg-type]
    messages = _conversation(history, parsed)
    max_tokens = parsed.params.max_tokens
    ids, _ = await target.worker.call(
        lambda backend: chat_prompt(backend, target.info, messages, max_tokens)
    )
    # Only a request that will really generate creates (or re-prompts) its session.
    if (
        parsed.session_id is not None
        and sessions.ensure(parsed.session_id, parsed.owner, parsed.system_prompt) is None
    ):
        raise NotFound(f"session {parsed.session_id!r} not found")
    stream = _start(request, target, parsed, ids)
    return ChatTurn(sessions, parsed, stream)
