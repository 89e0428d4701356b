"""OpenAI's stream framing: `data: {chunk}` events, then `data: [DONE]`.

The shared SSE writer (inferd/streaming.py) sends the keepalive comments (OpenAI clients
skip them) and puts tokens that arrive together into one write; these classes only say
what the chunks are. Pieces of text that arrive together become one chunk. The usage
rides on the last chunk (the one with `finish_reason`) unless the client asked
otherwise: `stream_options.include_usage` true is OpenAI's extra chunk with empty
`choices`, false is no usage at all. A failure midway is a `data: {"error": {...}}`
event (the openai client raises it as an APIError), then `[DONE]`.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel

from inferd.backends.base import GenerationStats, TokenEvent
from inferd.openai.responses import (
    ChatCompletionChunk,
    ChunkChoice,
    Completion,
    CompletionChoice,
    Delta,
    ErrorDetail,
    ErrorResponse,
    FinishReason,
    Usage,
    new_id,
    now,
)

DONE = "data: [DONE]\n\n"


def data(chunk: BaseModel) -> str:
    return f"data: {chunk.model_dump_json()}\n\n"


def error_data(message: str) -> str:
    detail = ErrorDetail(message=message, type="server_error", param=None, code=None)
    return data(ErrorResponse(error=detail))


class _Frames:
    """What chat and completion streams share; subclasses build the chunk models."""

    def __init__(self, prefix: str, model: str, include_usage: bool | None) -> None:
        self.id = new_id(prefix)
        self.created = now()
        self.model = model
        self.include_usage = include_usage

    def opening(self) -> str:
        return ""

    def events(self, events: Sequence[TokenEvent]) -> str:
        text = "".join(event.text for event in events if event.error is None)
        frames = data(self.text_chunk(text)) if text else ""
        for event in events:
            if event.error is not None:
                frames += error_data(f"generation failed: {event.error}")
        return frames

    def closing(self, stats: GenerationStats) -> str:
        reason = stats.finish_reason
        if reason not in ("stop", "length", "content_filter"):  # failed: error already sent
            return DONE
        usage = Usage.of(stats.prompt_tokens, stats.generated_tokens)
        frames = data(self.last_chunk(reason, usage if self.include_usage is None else None))
        if self.include_usage:
            frames += data(self.usage_chunk(usage))
        return frames + DONE

    def text_chunk(self, text: str) -> BaseModel:
        raise NotImplementedError

    def last_chunk(self, reason: FinishReason, usage: Usage | None) -> BaseModel:
        raise NotImplementedError

    def usage_chunk(self, usage: Usage) -> BaseModel:
        raise NotImplementedError


class ChatFrames(_Frames):
    """chat.completion.chunk events: the role first, then content deltas."""

    def __init__(self, model: str, include_usage: bool | None) -> None:
        super().__init__("chatcmpl", model, include_usage)

    def _chunk(self, choices: list[ChunkChoice], usage: Usage | None = None) -> BaseModel:
        return ChatCompletionChunk(
            id=self.id, created=self.created, model=self.model, choices=choices, usage=usage
        )

    def opening(self) -> str:
        return data(self._chunk([ChunkChoice(delta=Delta(role="assistant", content=""))]))

    def text_chunk(self, text: str) -> BaseModel:
        return self._chunk([ChunkChoice(delta=Delta(content=text))])

    def last_chunk(self, reason: FinishReason, usage: Usage | None) -> BaseModel:
        return self._chunk([ChunkChoice(delta=Delta(), finish_reason=reason)], usage)

    def usage_chunk(self, usage: Usage) -> BaseModel:
        return self._chunk([], usage)


class CompletionFrames(_Frames):
    """text_completion events: the same shape as the JSON reply, a piece of text each."""

    def __init__(self, model: str, include_usage: bool | None) -> None:
        super().__init__("cmpl", model, include_usage)

    def _chunk(self, choices: list[CompletionChoice], usage: Usage | None = None) -> BaseModel:
        return Completion(
            id=self.id, created=self.created, model=self.model, choices=choices, usage=usage
        )

    def text_chunk(self, text: str) -> BaseModel:
        return self._chunk([CompletionChoice(text=text)])

    def last_chunk(self, reason: FinishReason, usage: Usage | None) -> BaseModel:
        return self._chunk([CompletionChoice(text="", finish_reason=reason)], usage)

    def usage_chunk(self, usage: Usage) -> BaseModel:
        return self._chunk([], usage)
