"""A generation request after parsing: the same shape whatever the route or transport.

Every generating route (POST /completions, POST /chat/completions, WS /chat/ws, and any
route added later) turns its body into a ParsedRequest, and everything after that --
plugins that inspect or rewrite requests (`Plugin.transform_request`), model
resolution, prompt building, sessions -- works on this one type instead of on each
route's body schema.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from inferd.backends.base import ChatMessage, SamplingParams
from inferd.schemas import ChatRequest, CompletionRequest

# How the answer travels: one JSON body, Server-Sent Events, or WebSocket frames.
Transport = Literal["json", "sse", "websocket"]


@dataclass(slots=True)
class ParsedRequest:
    """What to generate, for whom, and how it is delivered.

    A completion has `prompt`; a chat has `messages` (the new turn: user messages, and
    any others a client sends with them) and maybe a `system_prompt`. A chat with a
    `session_id` is stateful: the session's history goes before `messages`, and the turn
    is stored afterwards; without one it is stateless.
    """

    endpoint: str  # "completions" | "chat" | "v1.completions" | "v1.chat" (OpenAI routes)
    transport: Transport
    model: str  # as the client named it: id, name or path
    device: str | None
    params: SamplingParams
    prompt: str | None = None
    messages: list[ChatMessage] = field(default_factory=list)
    system_prompt: str | None = None
    session_id: str | None = None
    owner: str | None = None  # the identity sessions belong to (set by the auth plugin)

    @property
    def is_chat(self) -> bool:
        return self.prompt is None


def from_completion(
    body: CompletionRequest, transport: Transport, owner: str | None
) -> ParsedRequest:
    return ParsedRequest(
        endpoint="completions",
        transport=transport,
        model=body.model,
        device=body.device,
        params=body.sampling(),
        prompt=body.prompt,
        owner=owner,
    )


def from_chat(
    body: ChatRequest, transport: Transport, session_id: str, owner: str | None
) -> ParsedRequest:
    """API.md's chat body; `session_id` is the one to use when the body names none."""
    return ParsedRequest(
        endpoint="chat",
        transport=transport,
        model=body.model_name,
        device=body.device,
        params=body.sampling(),
        messages=[ChatMessage("user", body.prompt)],
        system_prompt=body.system_prompt,
        session_id=body.session_id or session_id,
        owner=owner,
    )
