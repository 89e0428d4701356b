"""Session routes: list sessions, read, delete and roll back a session's history."""

from __future__ import annotations

from urllib.parse import unquote

from sanic import Request, Sanic
from sanic.response import HTTPResponse, empty, json

from inferd.errors import NotFound
from inferd.generation import owner_of
from inferd.requests import read_json
from inferd.schemas import RollbackRequest, parse_body

# Sanic hands over path parameters still percent-encoded ("user%3A42"): each route
# unquotes its session id, as a client's encodeURIComponent expects.


def _missing(session_id: str) -> NotFound:
    return NotFound(f"session {session_id!r} not found")


async def list_sessions(request: Request) -> HTTPResponse:
    return json(request.app.ctx.sessions.ids(owner_of(request)))


async def get_history(request: Request, session_id: str) -> HTTPResponse:
    session_id = unquote(session_id)
    session = request.app.ctx.sessions.get(session_id, owner_of(request))
    if session is None:
        raise _missing(session_id)
    return json(session.messages)


async def delete_history(request: Request, session_id: str) -> HTTPResponse:
    session_id = unquote(session_id)
    if not request.app.ctx.sessions.delete(session_id, owner_of(request)):
        raise _missing(session_id)
    return empty(status=204)


async def rollback(request: Request, session_id: str) -> HTTPResponse:
    """Remove the last `amount` messages (default 1); fewer remain when there are fewer."""
    session_id = unquote(session_id)
    body = read_json(request, default={})
    amount = parse_body(RollbackRequest, body).amount
    remaining = request.app.ctx.sessions.rollback(session_id, amount, owner_of(request))
    if remaining is None:
        raise _missing(session_id)
    return json({"status": "ok", "remaining": remaining})


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
