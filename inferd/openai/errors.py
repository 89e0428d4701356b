"""OpenAI's error shape on the /v1 routes, made in this one place.

Routes, the error handler and the plugins all answer failures as API.md's
`{"error": "<message>"}`. This response hook rewrites such bodies on /v1 paths into
OpenAI's `{"error": {"message", "type", "param", "code"}}`, keeping the status, so the
`openai` client raises its matching exception (400 BadRequestError, 401
AuthenticationError, 404 NotFoundError, 429 RateLimitError, 5xx InternalServerError).
Nothing else needs to know which shape a path gets.
"""

from __future__ import annotations

import json

from sanic import Request
from sanic.response import HTTPResponse

from inferd.errors import error_param
from inferd.openai.responses import ErrorDetail, ErrorResponse

# status -> (OpenAI's error type, code)
_KINDS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("not_found_error", None),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    503: ("server_error", "service_unavailable"),
}


def is_v1(path: str) -> bool:
    return path == "/v1" or path.startswith("/v1/")


def openai_error(status: int, message: str, param: str | None = None) -> ErrorResponse:
    kind, code = _KINDS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None)
    )
    return ErrorResponse(error=ErrorDetail(message=message, type=kind, param=param, code=code))


async def to_openai_errors(request: Request, response: HTTPResponse) -> None:
    """Response hook: API.md's error body becomes OpenAI's on /v1 paths (in place)."""
    if response.status < 400 or not is_v1(request.path) or not response.body:
        return
    if not (response.content_type or "").startswith("application/json"):
        return
    try:
        body = json.loads(response.body)
    except ValueError:
        return
    if not (isinstance(body, dict) and list(body) == ["error"] and isinstance(body["error"], str)):
        return
    converted = openai_error(response.status, body["error"], error_param(request))
    response.body = converted.model_dump_json().encode()
