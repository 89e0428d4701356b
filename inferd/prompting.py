"""Turning a request into prompt token ids, within the model's context window.

Runs on the model-owner thread (it uses the backend's tokenizer). A chat whose history
has outgrown the context drops its oldest turns -- never the system prompt or the new
message -- so long conversations keep working instead of failing.
"""

from __future__ import annotations

from collections.abc import Sequence

from inferd.backends.base import Backend, ChatMessage, ModelInfo
from inferd.errors import BadRequest


class PromptTooLong(BadRequest):
    """A prompt that leaves no room in the context for even one generated token; its
    numbers let /v1 say so in OpenAI's words."""

    def __init__(self, prompt_tokens: int, context_length: int) -> None:
        super().__init__(
            f"prompt too long: {prompt_tokens} tokens, but the model's context is "
            f"{context_length} tokens (leave room for at least one generated token)"
        )
        self.prompt_tokens = prompt_tokens
        self.context_length = context_length


def completion_prompt(backend: Backend, info: ModelInfo, prompt: str) -> list[int]:
    ids = backend.encode_text(prompt)
    if len(ids) >= info.context_length:
        raise PromptTooLong(len(ids), info.context_length)
    return ids


def reply_room(info: ModelInfo, max_tokens: int) -> int:
    """Tokens kept free for the answer when history is trimmed: up to a quarter of the context."""
    return min(max_tokens, info.context_length // 4)


def drop_oldest_turn(history: list[ChatMessage]) -> int:
    """Drop the oldest turn -- a user message and the assistant reply that follows it --
    in place; returns how many messages went."""
    turn = 2 if len(history) >= 2 and history[1].role == "assistant" else 1
    del history[:turn]
    return turn


def split_latest(
    messages: Sequence[ChatMessage],
) -> tuple[list[ChatMessage], list[ChatMessage], list[ChatMessage]]:
    """The system message (if any), the history that may be trimmed, and the latest
    message (none when the system message is all there is): lists, to splice."""
    system = [m for m in messages[:1] if m.role == "system"]
    rest = list(messages[len(system) :])
    return system, rest[:-1], rest[-1:]


def chat_prompt(
    backend: Backend, info: ModelInfo, messages: Sequence[ChatMessage], max_tokens: int
) -> tuple[list[int], int]:
    """Prompt ids for `messages` (system first if any, new user message last; or a
    system message alone, which the model answers as OpenAI's do).

    Returns the ids and how many history messages were dropped to make them fit.
    """
    system, history, latest = split_latest(messages)
    budget = info.context_length - reply_room(info, max_tokens)
    dropped = 0
    while True:
        ids = backend.encode_chat([*system, *history, *latest])
        if len(ids) <= budget or not history:
            break
        dropped += drop_oldest_turn(history)
    if len(ids) >= info.context_length:
        raise PromptTooLong(len(ids), info.context_length)
    return ids, dropped
