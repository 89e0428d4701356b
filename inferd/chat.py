"""POST /chat/completions: a chat turn with session history, streamed as SSE."""

from __future__ import annotations

from sanic import Request, Sanic

from inferd.apidoc import GENERATION_ERRORS, describe
from inferd.generation import owner_of, start_chat
from inferd.parsed_request import from_chat
from inferd.requests import read_json
from inferd.schemas import ChatRequest, parse_body
from inferd.streaming import send_sse


@describe(
    "A chat turn with session history, streamed",
    "chat",
    body=ChatRequest,
    media=("text/event-stream",),
    headers={"X-Session-Id": "the session the turn was stored in"},
    errors=GENERATION_ERRORS,
)
async def chat_completions(request: Request) -> None:
    """SSE: one `data:` event per piece of text; `event: error` if it fails midway."""
    body = parse_body(ChatRequest, read_json(request))
    new_id = request.app.ctx.sessions.new_id()  # used when the body names no session
    turn = await start_chat(request, from_chat(body, "sse", new_id, owner_of(request)))

    def collect(text: str) -> None:
        turn.answer += text

    try:
        # A plugin's transform_request may have made the chat stateless (no session).
        headers = {"X-Session-Id": turn.session_id} if turn.session_id else {}
        await send_sse(request, turn.stream, headers, collect, on_end=turn.record)
    finally:
        # A turn cut short (a disconnect, a failure) is stored here: nothing said is lost.
        await turn.record()


def register(app: Sanic) -> None:
    app.add_route(
        chat_completions,
        "/chat/completions",
        methods=["POST"],
        name="chat_completions",
        error_format="json",
    )
