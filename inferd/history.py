"""Session routes: list sessions, read, delete and roll back a session's history."""

from __future__ import annotations

from urllib.parse import unquote

from sanic import Request, Sanic
from sanic.response import HTTPResponse, empty, json

from inferd.apidoc import BODY_ERRORS, COMMON_ERRORS, describe
from inferd.errors import NotFound
from inferd.generation import owner_of
from inferd.replies import HistoryMessage, RollbackReply
from inferd.requests import read_json
from inferd.schemas import RollbackRequest, parse_body

# Sanic hands over path parameters still percent-encoded ("user%3A42"): each route
# unquotes its session id, as a client's encodeURIComponent expects.


def _missing(session_id: str) -> NotFound:
    return NotFound(f"session {session_id!r} not found")


@describe("Session ids, oldest first", "sessions", replies={200: list[str]})
async def list_sessions(request: Request) -> HTTPResponse:
    return json(request.app.ctx.sessions.ids(owner_of(request)))


@describe(
    "A session's messages",
    "sessions",
    replies={200: list[HistoryMessage]},
    errors=(404, *COMMON_ERRORS),
)
async def get_history(request: Request, session_id: str) -> HTTPResponse:
    session_id = unquote(session_id)
    session = request.app.ctx.sessions.get(session_id, owner_of(request))
    if session is None:
        raise _missing(session_id)
    return json([HistoryMessage(**m).model_dump() for m in session.messages])


@describe("Delete a session", "sessions", replies={204: None}, errors=(404, *COMMON_ERRORS))
async def delete_history(request: Request, session_id: str) -> HTTPResponse:
    session_id = unquote(session_id)
    if not request.app.ctx.sessions.delete(session_id, owner_of(request)):
        raise _missing(session_id)
    return empty(status=204)


@describe(
    "Remove a session's last messages",
    "sessions",
    body=RollbackRequest,
    body_required=False,
    replies={200: RollbackReply},
    errors=(404, *BODY_ERRORS),
)
async def rollback(request: Request, session_id: str) -> HTTPResponse:
    """Remove the last `amount` messages (default 1); fewer remain when there are fewer."""
    session_id = unquote(session_id)
    body = read_json(request, default={})
    amount = parse_body(RollbackRequest, body).amount
    remaining = request.app.ctx.sessions.rollback(session_id, amount, owner_of(request))
    if remaining is None:
        raise _missing(session_id)
    return json(RollbackReply(remaining=remaining).model_dump())


def register(app: Sanic) -> None:
    app.add_route(list_sessions, "/sessions", methods=["GET"], name="list_sessions")
    app.add_route(
        get_history, "/chat/history/<session_id:str>", methods=["GET"], name="get_history"
    )
    app.add_route(
        delete_history, "/chat/history/<session_id:str>", methods=["DELETE"], name="delete_history"
    )
    app.add_route(
        rollback, "/chat/history/<session_id:str>/rollback", methods=["POST"], name="rollback"
    )
