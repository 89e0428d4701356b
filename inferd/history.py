"""Session routes: list sessions, read, delete and roll back a session's history.

Beyond API.md (documented in the README): `GET /sessions?detail=true` lists each
session's metadata, `POST /chat/history/<id>/fork` branches a session,
`PATCH /chat/history/<id>` renames one and `POST /chat/history` imports a conversation.
"""

from __future__ import annotations

from datetime import datetime, timezone
from urllib.parse import unquote

from sanic import Request, Sanic
from sanic.response import HTTPResponse, empty, json

from inferd.apidoc import BODY_ERRORS, COMMON_ERRORS, describe
from inferd.errors import BadRequest, NotFound
from inferd.generation import owner_of
from inferd.replies import HistoryMessage, RollbackReply, SessionDetail
from inferd.requests import read_json
from inferd.schemas import (
    ForkRequest,
    ImportRequest,
    RenameRequest,
    RollbackRequest,
    parse_body,
)
from inferd.sessions import Session

# Sanic hands over path parameters still percent-encoded ("user%3A42"): each route
# unquotes its session id, as a client's encodeURIComponent expects.
DEFAULT_TITLE_LENGTH = 80
FLAGS = {"true": True, "1": True, "false": False, "0": False}


def _missing(session_id: str) -> NotFound:
    return NotFound(f"session {session_id!r} not found")


def _timestamp(seconds: float) -> str:
    """ISO 8601 in UTC with milliseconds, like API.md's timestamps: 2025-12-07T10:30:00.000Z."""
    moment = datetime.fromtimestamp(seconds, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _clean_title(text: str) -> str:
    return " ".join(text.split())


def default_title(session: Session) -> str | None:
    """The first user message on one line, shortened; None before there is one."""
    first = next((m["content"] for m in session.messages if m["role"] == "user"), None)
    if first is None:
        return None
    title = _clean_title(first)
    if len(title) > DEFAULT_TITLE_LENGTH:
        title = title[: DEFAULT_TITLE_LENGTH - 1].rstrip() + "…"
    return title


def detail(session: Session) -> dict:
    """A session's metadata, as `GET /sessions?detail=true` lists it."""
    return SessionDetail(
        id=session.id,
        title=session.title or default_title(session),
        created=_timestamp(session.created),
        updated=_timestamp(session.updated),
        message_count=len(session.messages),
        parent=session.parent,
        fork_point=session.fork_point,
    ).model_dump()


# Every session route may answer 503 (with Retry-After) when the session store is busy.
@describe(
    "Session ids, oldest first (with ?detail=true, each session's metadata)",
    "sessions",
    replies={200: list[str] | list[SessionDetail]},
    query={"detail": "true: metadata objects instead of ids (an inferd extension)"},
    errors=(400, *COMMON_ERRORS, 503),
)
async def list_sessions(request: Request) -> HTTPResponse:
    flag = request.args.get("detail", "false").lower()
    if flag not in FLAGS:
        raise BadRequest(f"invalid 'detail': use true or false (got {flag!r})")
    sessions = await request.app.ctx.sessions.sessions(owner_of(request))
    if FLAGS[flag]:
        return json([detail(session) for session in sessions])
    return json([session.id for session in sessions])


@describe(
    "A session's messages",
    "sessions",
    replies={200: list[HistoryMessage]},
    errors=(404, *COMMON_ERRORS, 503),
)
async def get_history(request: Request, session_id: str) -> HTTPResponse:
    session_id = unquote(session_id)
    session = await request.app.ctx.sessions.get(session_id, owner_of(request))
    if session is None:
        raise _missing(session_id)
    return json([HistoryMessage(**m).model_dump() for m in session.messages])


@describe("Delete a session", "sessions", replies={204: None}, errors=(404, *COMMON_ERRORS, 503))
async def delete_history(request: Request, session_id: str) -> HTTPResponse:
    session_id = unquote(session_id)
    if not await request.app.ctx.sessions.delete(session_id, owner_of(request)):
        raise _missing(session_id)
    return empty(status=204)


@describe(
    "Remove a session's last messages",
    "sessions",
    body=RollbackRequest,
    body_required=False,
    replies={200: RollbackReply},
    errors=(404, *BODY_ERRORS, 503),
)
async def rollback(request: Request, session_id: str) -> HTTPResponse:
    """Remove the last `amount` messages (default 1); fewer remain when there are fewer."""
    session_id = unquote(session_id)
    body = read_json(request, default={})
    amount = parse_body(RollbackRequest, body).amount
    remaining = await request.app.ctx.sessions.rollback(session_id, amount, owner_of(request))
    if remaining is None:
        raise _missing(session_id)
    return json(RollbackReply(remaining=remaining).model_dump())


@describe(
    "Branch a session: a new one holding its first `keep` messages (an inferd extension)",
    "sessions",
    body=ForkRequest,
    body_required=False,
    replies={201: SessionDetail},
    errors=(404, *BODY_ERRORS, 503),
)
async def fork(request: Request, session_id: str) -> HTTPResponse:
    """The new session records this one as its parent; `keep` defaults to every message."""
    session_id = unquote(session_id)
    keep = parse_body(ForkRequest, read_json(request, default={})).keep
    try:
        child = await request.app.ctx.sessions.fork(session_id, keep, owner_of(request))
    except ValueError as error:
        raise BadRequest(str(error)) from None
    if child is None:
        raise _missing(session_id)
    return json(detail(child), status=201)


@describe(
    "Rename a session (an inferd extension)",
    "sessions",
    body=RenameRequest,
    replies={200: SessionDetail},
    errors=(404, *BODY_ERRORS, 503),
)
async def rename(request: Request, session_id: str) -> HTTPResponse:
    """Set the title; null or a blank title goes back to the default one."""
    session_id = unquote(session_id)
    title = parse_body(RenameRequest, read_json(request)).title
    title = _clean_title(title) if title else None
    session = await request.app.ctx.sessions.rename(session_id, title or None, owner_of(request))
    if session is None:
        raise _missing(session_id)
    return json(detail(session))


@describe(
    "Import a conversation as a new session (an inferd extension)",
    "sessions",
    body=ImportRequest,
    replies={201: SessionDetail},
    errors=(*BODY_ERRORS, 503),
)
async def import_session(request: Request) -> HTTPResponse:
    """A new session holding the given messages (an exported conversation)."""
    body = parse_body(ImportRequest, read_json(request))
    messages = [message.model_dump() for message in body.messages]
    if any(m["role"] == "system" for m in messages[1:]):
        raise BadRequest("invalid 'messages': only the first message may have role 'system'")
    title = _clean_title(body.title) if body.title else None
    session = await request.app.ctx.sessions.create(messages, owner_of(request), title or None)
    return json(detail(session), status=201)


def register(app: Sanic) -> None:
    session = "/chat/history/<session_id:str>"
    for handler, uri, method in (
        (list_sessions, "/sessions", "GET"),
        (import_session, "/chat/history", "POST"),
        (get_history, session, "GET"),
        (delete_history, session, "DELETE"),
        (rename, session, "PATCH"),
        (rollback, f"{session}/rollback", "POST"),
        (fork, f"{session}/fork", "POST"),
    ):
        name = handler.__name__
        app.add_route(handler, uri, methods=[method], name=name, error_format="json")
