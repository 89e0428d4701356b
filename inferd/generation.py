"""What every generating route shares: pick the worker, build the prompt, start the
stream, keep it alive, and record a chat turn in the session store.

Routes (completions.py, chat.py, ws.py) only translate this to their transport.
"""

from __future__ import annotations

from dataclasses import dataclass

from sanic import Request

from inferd.backends.base import ChatMessage, ModelInfo, SamplingParams
from inferd.config import ModelConfig
from inferd.engine import ModelWorker
from inferd.errors import InternalError, NotFound
from inferd.plugins.base import Generation, Transport
from inferd.prompting import chat_prompt, completion_prompt
from inferd.schemas import ChatRequest, CompletionRequest
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


def _start(
    request: Request,
    target: Target,
    endpoint: str,
    transport: Transport,
    ids: list[int],
    params: SamplingParams,
) -> Stream:
    generation = Generation(request, endpoint, transport, target.model.name, target.device)
    observer = request.app.ctx.plugins.observe(generation)
    return target.worker.submit(ids, params, observer)


async def start_completion(
    request: Request, body: CompletionRequest, transport: Transport
) -> tuple[Target, Stream]:
    target = await resolve(request, body.model, body.device)
    ids = await target.worker.call(
        lambda backend: completion_prompt(backend, target.info, body.prompt)
    )
    return target, _start(request, target, "completions", transport, ids, body.sampling())


@dataclass(slots=True)
class ChatTurn:
    """A chat request in flight: its session, its stream, and the answer so far."""

    sessions: SessionStore
    session_id: str
    owner: str | None
    prompt: str
    stream: Stream
    answer: str = ""

    def record(self) -> None:
        """Store the exchange, whatever ended it: a cancelled or failed turn keeps what was
        answered (maybe nothing), so the user's message is never lost and the history
        keeps alternating user/assistant as chat templates expect."""
        self.sessions.append(
            self.session_id,
            [
                {"role": "user", "content": self.prompt},
                {"role": "assistant", "content": self.answer},
            ],
            self.owner,
        )


async def start_chat(
    request: Request, body: ChatRequest, transport: Transport, session_id: str | None = None
) -> ChatTurn:
    """Validate, load, build the prompt from the session's history and start generating."""
    target = await resolve(request, body.model_name, body.device)
    sessions: SessionStore = request.app.ctx.sessions
    owner = owner_of(request)
    session_id = body.session_id or session_id or sessions.new_id()
    session = sessions.get(session_id, owner)
    messages = [ChatMessage(m["role"], m["content"]) for m in (session.messages if session else [])]  # type: ignore[arg-type]
    if body.system_prompt is not None:
        if messages and messages[0].role == "system":
            messages = messages[1:]
        messages.insert(0, ChatMessage("system", body.system_prompt))
    messages.append(ChatMessage("user", body.prompt))
    ids, _ = await target.worker.call(
        lambda backend: chat_prompt(backend, target.info, messages, body.max_token)
    )
    # Only a request that will really generate creates (or re-prompts) its session.
    if sessions.ensure(session_id, owner, body.system_prompt) is None:
        raise NotFound(f"session {session_id!r} not found")
    stream = _start(request, target, "chat", transport, ids, body.sampling())
    return ChatTurn(sessions, session_id, owner, body.prompt, stream)
