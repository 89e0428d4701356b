"""POST /completions: raw-prompt completion, as one JSON body or as SSE."""

from __future__ import annotations

from sanic import Request, Sanic
from sanic.response import HTTPResponse, json

from inferd.errors import InternalError
from inferd.generation import owner_of, start_completion
from inferd.parsed_request import from_completion
from inferd.requests import read_json
from inferd.schemas import CompletionRequest, parse_body
from inferd.streaming import send_sse


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
    return json(
        {
            "text": "".join(pieces),
            "model": target.model.name,
            "tokens": stream.stats.generated_tokens,
            "prompt_tokens": stream.stats.prompt_tokens,
            "finish_reason": stream.stats.finish_reason,
        }
    )


def register(app: Sanic) -> None:
    app.add_route(completions, "/completions", methods=["POST"], name="completions")
