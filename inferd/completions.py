"""POST /completions: raw-prompt completion, as one JSON body or as SSE."""

from __future__ import annotations

from sanic import Request, Sanic
from sanic.response import HTTPResponse, json

from inferd.apidoc import GENERATION_ERRORS, describe
from inferd.errors import InternalError
from inferd.generation import owner_of, start_completion
from inferd.parsed_request import from_completion
from inferd.replies import CompletionReply
from inferd.requests import read_json
from inferd.schemas import CompletionRequest, parse_body
from inferd.streaming import send_sse


@describe(
    "Complete a prompt",
    "completions",
    body=CompletionRequest,
    replies={200: CompletionReply},
    streams="SSE: one `data:` event per piece of text; `event: error` if it fails midway",
    errors=GENERATION_ERRORS,
)
async def completions(request: Request) -> HTTPResponse | None:
    body = parse_body(CompletionRequest, read_json(request))
    parsed = from_completion(body, "sse" if body.stream else "json", owner_of(request))
    target, stream = await start_completion(request, parsed)
    if body.stream:
        await send_sse(request, stream)
        return None
    pieces: list[str] = []
    try:
        async for event in stream:
            if event.error is not None:
                raise InternalError(f"generation failed: {event.error}")
            pieces.append(event.text)
    finally:
        stream.cancel()
    reply = CompletionReply(
        text="".join(pieces),
        model=target.model.name,
        tokens=stream.stats.generated_tokens,
        prompt_tokens=stream.stats.prompt_tokens,
        finish_reason=stream.stats.finish_reason,
    )
    return json(reply.model_dump())


def register(app: Sanic) -> None:
    app.add_route(
        completions, "/completions", methods=["POST"], name="completions", error_format="json"
    )
