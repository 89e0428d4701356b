"""OpenAI's error shape on the /v1 routes, made in this one place.

Routes, the error handler and the plugins all answer failures as API.md's
`{"error": "<message>"}`. This response hook rewrites such bodies on /v1 paths into
OpenAI's `{"error": {"message", "type", "param", "code"}}`, keeping the status, so the
`openai` client raises its matching exception (400 BadRequestError, 401
AuthenticationError, 404 NotFoundError, 429 RateLimitError, 5xx InternalServerError).
Nothing else needs to know which shape a path gets. The code is the ApiError's own when
it has one (LiteLLM and others match on "context_length_exceeded" and
"model_not_found"), else the status's.
"""

from __future__ import annotations

import json

from sanic import Request
from sanic.response import HTTPResponse

from inferd.errors import BadRequest, error_code, error_param
from inferd.openai.responses import ErrorDetail, ErrorResponse
from inferd.prompting import PromptTooLong

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


def openai_error(
    status: int, message: str, param: str | None = None, code: str | None = None
) -> ErrorResponse:
    kind, default_code = _KINDS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None)
    )
    detail = ErrorDetail(message=message, type=kind, param=param, code=code or default_code)
    return ErrorResponse(error=detail)


def context_length_exceeded(error: PromptTooLong, what: str) -> BadRequest:
    """OpenAI's 400 for a prompt too long, with inferd's counts; `what` is "messages"
    on a chat, "prompt" on a completion (the param it names)."""
    return BadRequest(
        f"This model's maximum context length is {error.context_length} tokens. However, "
        f"your {what} resulted in {error.prompt_tokens} tokens, leaving no room for a "
        f"generated token. Please reduce the length of the {what}.",
        param=what,
        code="context_length_exceeded",
    )


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
    converted = openai_error(
        response.status, body["error"], error_param(request), error_code(request)
    )
    response.body = converted.model_dump_json().encode()
