"""Fitting a chat history into a remote model's context, without its tokenizer.

inferd holds no tokenizer for a remote model, so it cannot count a prompt's tokens
exactly. It counts an upper bound instead: the UTF-8 bytes of the messages -- a token
of a byte-level BPE vocabulary (GPT, Llama 3, Qwen, Mistral's Tekken) covers at least
one byte, and so does nearly every token of a SentencePiece vocabulary with byte
fallback -- plus a generous allowance for the chat template's own tokens. Trimming
against that bound never sends a history that overflows the context; the price is that
old turns go earlier than an exact count would drop them (about 4 bytes make a token of
English). The exact count comes back with each answer (`usage.prompt_tokens`).

A completion prompt is sent as it is: the bound may be far above the real count, so it
is no reason to refuse one; an upstream that finds it too long answers 400, passed on.
"""

from __future__ import annotations

from collections.abc import Sequence

from inferd.backends.base import ChatMessage, ModelInfo
from inferd.prompting import drop_oldest_turn, reply_room, split_latest

# Template tokens of a conversation (BOS, the assistant's header, a default system
# prompt some templates add) and of each message (role header, end-of-turn markers).
CONVERSATION_TOKENS = 32
MESSAGE_TOKENS = 8


def token_bound(messages: Sequence[ChatMessage]) -> int:
    """At least as many tokens as the upstream's template makes of `messages`."""
    return CONVERSATION_TOKENS + sum(
        MESSAGE_TOKENS + len(message.content.encode()) for message in messages
    )


def fit_history(
    messages: Sequence[ChatMessage], info: ModelInfo, max_tokens: int
) -> tuple[list[ChatMessage], int]:
    """`messages` with the oldest turns dropped until the bound fits the context, leaving
    room for the answer; never the system prompt or the new message. Returns the messages
    and how many were dropped."""
    system, history, latest = split_latest(messages)
    budget = info.context_length - reply_room(info, max_tokens)
    dropped = 0
    while history and token_bound([*system, *history, *latest]) > budget:
        dropped += drop_oldest_turn(history)
    return [*system, *history, *latest], dropped
