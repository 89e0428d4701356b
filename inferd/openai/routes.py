"""The OpenAI-compatible routes: GET /v1/models, POST /v1/completions and
POST /v1/chat/completions, as JSON or as a stream of chunks.

They parse their bodies into the same ParsedRequest as API.md's routes and go through
the same generation code (inferd/generation.py): the same plugins, backends, sessions
and cancellation on disconnect. A chat with a `session_id` field or an `X-Session-Id`
header is stateful: `messages` is the new turn only, and the session is the one
/chat/history and the WebSocket see. Without one it is stateless, as OpenAI's is.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from sanic import Request, Sanic
from sanic.response import HTTPResponse, json

from inferd.apidoc import COMMON_ERRORS, GENERATION_ERRORS, describe
from inferd.errors import BadRequest, InternalError
from inferd.generation import owner_of, start_chat, start_completion
from inferd.models import name_in_path
from inferd.openai.chunks import ChatFrames, CompletionFrames
from inferd.openai.errors import context_length_exceeded, to_openai_errors
from inferd.openai.messages import split_system
from inferd.openai.responses import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    Completion,
    CompletionChoice,
    ModelCard,
    ModelList,
    Usage,
    new_id,
    now,
)
from inferd.openai.schemas import (
    CHAT_UNSUPPORTED,
    COMPLETION_UNSUPPORTED,
    ChatCompletionRequest,
    TextCompletionRequest,
    refuse_unsupported,
)
from inferd.parsed_request import ParsedRequest
from inferd.prompting import PromptTooLong
from inferd.requests import read_json
from inferd.schemas import SESSION_ID_PATTERN, parse_body
from inferd.stream import Stream
from inferd.streaming import send_sse

SESSION_HEADER = "X-Session-Id"
_STARTED = int(time.time())  # the `created` of every model card


def _card(request: Request, model_name: str) -> ModelCard:
    registry = request.app.ctx.registry
    model = registry.find(model_name)
    return ModelCard(id=model.name, created=_STARTED, context_length=registry.context_length(model))


@describe("OpenAI: list models", "openai", replies={200: ModelList}, openai_errors=True)
async def list_models(request: Request) -> HTTPResponse:
    names = [model.name for model in request.app.ctx.registry.models]
    return json(ModelList(data=[_card(request, name) for name in names]).model_dump())


@describe(
    "OpenAI: retrieve a model",
    "openai",
    replies={200: ModelCard},
    errors=(404, *COMMON_ERRORS),
    openai_errors=True,
)
async def get_model(request: Request, model_id: str) -> HTTPResponse:
    name = name_in_path(model_id)
    if not name:  # `/v1/models/` is the list, as `/v1/models` is
        return await list_models(request)
    return json(_card(request, name).model_dump())


def _parse(
    request: Request, model: type, unsupported: dict
) -> ChatCompletionRequest | TextCompletionRequest:
    raw = read_json(request)
    refuse_unsupported(raw, unsupported)
    body = parse_body(model, raw)
    body.check()
    return body


async def _drain(stream: Stream, on_text: Callable[[str], None]) -> None:
    """Read a whole generation for a JSON reply; a failure midway is a 500."""
    try:
        async for event in stream:
            if event.error is not None:
                raise InternalError(f"generation failed: {event.error}")
            if event.text:
                on_text(event.text)
    finally:
        stream.cancel()


def _usage(stream: Stream) -> Usage:
    return Usage.of(stream.stats.prompt_tokens, stream.stats.generated_tokens)


def _include_usage(body: ChatCompletionRequest | TextCompletionRequest) -> bool | None:
    return body.stream_options.include_usage if body.stream_options else None


@describe(
    "OpenAI: complete a prompt",
    "openai",
    body=TextCompletionRequest,
    replies={200: Completion},
    streams="`data: {chunk}` events (the same shape, a piece of text each), then `data: [DONE]`",
    chunk=Completion,
    errors=GENERATION_ERRORS,
    openai_errors=True,
)
async def completions(request: Request) -> HTTPResponse | None:
    body: TextCompletionRequest = _parse(request, TextCompletionRequest, COMPLETION_UNSUPPORTED)
    parsed = ParsedRequest(
        endpoint="v1.completions",
        transport="sse" if body.stream else "json",
        model=body.model,
        device=body.device,
        params=body.sampling(body.max_tokens),
        prompt=body.text,
        owner=owner_of(request),
    )
    try:
        target, stream = await start_completion(request, parsed)
    except PromptTooLong as error:
        raise context_length_exceeded(error, "prompt") from None
    if body.stream:
        frames = CompletionFrames(target.model.name, _include_usage(body))
        await send_sse(request, stream, frames=frames)
        return None
    pieces: list[str] = []
    await _drain(stream, pieces.append)
    choice = CompletionChoice(text="".join(pieces), finish_reason=stream.stats.finish_reason)
    reply = Completion(
        id=new_id("cmpl"),
        created=now(),
        model=target.model.name,
        choices=[choice],
        usage=_usage(stream),
    )
    return json(reply.model_dump())


def session_of(request: Request, body: ChatCompletionRequest) -> str | None:
    """The session named by the body's `session_id` or the X-Session-Id header, if any."""
    header = request.headers.get(SESSION_HEADER)
    if header is not None and not re.fullmatch(SESSION_ID_PATTERN, header):
        raise BadRequest(
            f"invalid {SESSION_HEADER} header {header!r}: use 1-128 of A-Z a-z 0-9 . _ : -",
            param=SESSION_HEADER,
        )
    if header is not None and body.session_id is not None and header != body.session_id:
        raise BadRequest(
            f"'session_id' ({body.session_id!r}) and the {SESSION_HEADER} header ({header!r}) "
            "name different sessions; send one",
            param="session_id",
        )
    return body.session_id or header


@describe(
    "OpenAI: a chat completion, stateless or in a server-side session",
    "openai",
    body=ChatCompletionRequest,
    replies={200: ChatCompletion},
    streams="`data: {chat.completion.chunk}` events, then `data: [DONE]`",
    chunk=ChatCompletionChunk,
    headers={SESSION_HEADER: "the session, when the request named one"},
    request_headers={SESSION_HEADER: "a server-side session (or the `session_id` field)"},
    errors=GENERATION_ERRORS,
    openai_errors=True,
)
async def chat_completions(request: Request) -> HTTPResponse | None:
    body: ChatCompletionRequest = _parse(request, ChatCompletionRequest, CHAT_UNSUPPORTED)
    session_id = session_of(request, body)
    system_prompt, messages = split_system(body.messages, session_id)
    parsed = ParsedRequest(
        endpoint="v1.chat",
        transport="sse" if body.stream else "json",
        model=body.model,
        device=body.device,
        params=body.sampling(body.budget),
        messages=messages,
        system_prompt=system_prompt,
        session_id=session_id,
        owner=owner_of(request),
    )
    try:
        turn = await start_chat(request, parsed)
    except PromptTooLong as error:
        raise context_length_exceeded(error, "messages") from None
    headers = {SESSION_HEADER: session_id} if session_id else {}
    model_name = request.app.ctx.registry.find(body.model).name

    def collect(text: str) -> None:
        turn.answer += text

    try:
        if body.stream:
            frames = ChatFrames(model_name, _include_usage(body))
            await send_sse(request, turn.stream, headers, collect, frames, on_end=turn.record)
            return None
        await _drain(turn.stream, collect)
    finally:
        # Stored before the answer goes out, or here for a turn cut short: nothing said
        # is lost, and a client's next turn finds this one in the history.
        await turn.record()
    choice = ChatChoice(
        message=AssistantMessage(content=turn.answer), finish_reason=turn.stream.stats.finish_reason
    )
    reply = ChatCompletion(
        id=new_id("chatcmpl"),
        created=now(),
        model=model_name,
        choices=[choice],
        usage=_usage(turn.stream),
    )
    return json(reply.model_dump(), headers=headers)


def register(app: Sanic) -> None:
    for handler, uri, method in (
        (list_models, "/v1/models", "GET"),
        (get_model, "/v1/models/<model_id:path>", "GET"),
        (completions, "/v1/completions", "POST"),
        (chat_completions, "/v1/chat/completions", "POST"),
    ):
        name = f"v1_{handler.__name__}"
        app.add_route(handler, uri, methods=[method], name=name, error_format="json")
    app.on_response(to_openai_errors)
