"""One mapping from exceptions to HTTP statuses and `{"error": "..."}` bodies.

Route code raises `ApiError` subclasses with a message a user can act on; Sanic's own
exceptions (unknown route, wrong method, body too large, a 503 response timeout) keep
their status but get the same body shape. A client that went away before its answer was
ready is no failure of ours: Sanic cancels the handler, and the answer nobody reads is a
499, nginx's "client closed request" (the access log and metrics read that status).
Anything else is a real internal failure: it is logged with the request id, and the
client gets a 500 that quotes that id instead of a traceback.
"""

from __future__ import annotations

import logging

from sanic import Request
from sanic.exceptions import MethodNotAllowed, RequestCancelled, SanicException
from sanic.response import HTTPResponse, json

from inferd.methods import allowed_methods

log = logging.getLogger("inferd")
CLIENT_CLOSED = 499  # nginx's "client closed request": never sent, only logged and counted


class ApiError(Exception):
    """An error with a client-facing message and an HTTP status: raise one to answer a
    request with `{"error": message}`.

    Use a subclass -- `BadRequest("temperature must be at most 2")` -- or give the
    status: `ApiError("I'm a teapot", status=418)`; `ApiError(418, "I'm a teapot")` is
    accepted too. `headers` are added to the error response. `param` and `code` are for
    OpenAI-shaped errors (/v1): the request field at fault, and a machine-readable code
    clients match on (e.g. "model_not_found"); API.md's `{"error": ...}` shows neither.
    """

    status = 500

    def __init__(
        self,
        message: str | int,
        detail: str | None = None,
        *,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        if isinstance(message, int):  # ApiError(status, message)
            if detail is None or status is not None:
                raise TypeError("use ApiError(message, status=N) or ApiError(N, message)")
            status, message = message, detail
        elif detail is not None:
            raise TypeError("use ApiError(message, status=N) or ApiError(N, message)")
        if status is not None:
            if not 400 <= status <= 599:
                raise ValueError(f"an ApiError status must be 400-599, not {status}")
            self.status = status
        super().__init__(message)
        self.message = message
        self.headers = headers or {}
        # The request field at fault, when there is one: OpenAI-style errors name it.
        self.param = param
        self.code = code


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class TooManyRequests(ApiError):
    status = 429


class InternalError(ApiError):
    status = 500


class ServiceUnavailable(ApiError):
    status = 503


class RetryLater(ServiceUnavailable):
    """Temporarily unable to serve (overloaded, draining, store busy): a 503 that says
    when to come back."""

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class Overloaded(RetryLater):
    """Load shed on purpose (a full queue, a queue wait past its limit): an expected
    operating condition, so it is logged as a warning, not as a failure."""


def request_id(request: Request) -> str:
    return str(request.id)


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> HTTPResponse:
    return json({"error": message}, status=status, headers=headers)


def describe_exception(
    request: Request, exception: BaseException
) -> tuple[int, str, dict[str, str]]:
    """Status, client message and headers for any exception (logging internal ones)."""
    if isinstance(exception, RequestCancelled):  # the client disconnected mid-request
        return CLIENT_CLOSED, "client closed request", {}
    if isinstance(exception, ApiError):
        if exception.status >= 500:
            level = logging.WARNING if isinstance(exception, Overloaded) else logging.ERROR
            log.log(level, "request %s: %s", request_id(request), exception.message)
        return exception.status, exception.message, exception.headers
    if isinstance(exception, SanicException) and exception.status_code != 500:
        headers = dict(getattr(exception, "headers", None) or {})
        if isinstance(exception, MethodNotAllowed) and "Allow" not in headers:
            # Sanic's router leaves it off when routes share a path (methods.py).
            headers["Allow"] = ", ".join(allowed_methods(request.app, request.path))
        return exception.status_code, str(exception) or "bad request", headers
    log.exception("request %s failed", request_id(request), exc_info=exception)
    return 500, f"internal server error (request id {request_id(request)})", {}


def error_param(request: Request) -> str | None:
    """The field named by the ApiError that this request's error response reports."""
    return getattr(request.ctx, "inferd_error_param", None)


def error_code(request: Request) -> str | None:
    """The code of the ApiError that this request's error response reports."""
    return getattr(request.ctx, "inferd_error_code", None)


def handle_exception(request: Request, exception: BaseException) -> HTTPResponse:
    """Sanic error handler: every failure becomes `{"error": ...}` with its status."""
    status, message, headers = describe_exception(request, exception)
    request.ctx.inferd_error_param = getattr(exception, "param", None)
    request.ctx.inferd_error_code = getattr(exception, "code", None)
    return error_response(status, message, headers)
