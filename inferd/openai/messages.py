"""Chat messages as OpenAI clients send them, and how they become inferd's.

Clients send more than a role and a text: LangChain puts a message's `name` on it,
Open WebUI adds `cache_control` to text parts. Those are read and dropped, as vLLM and
llama.cpp do: `name` because inferd's messages (and most chat templates) have no place
for it, unknown keys of a text part because they only steer other providers' caches.
A part that is not text (an image, audio, a file) is refused by name: dropping it
would answer a different question than the one asked.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from inferd.backends.base import ChatMessage
from inferd.errors import BadRequest


class ContentPart(BaseModel):
    """One part of a message's content; keys other than `type` and `text` are ignored."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    type: str
    text: str | None = None


class Message(BaseModel):
    """A chat message; `developer` is OpenAI's newer name for `system`."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart]
    name: str | None = None  # accepted and dropped: see the module's docstring

    def check(self, where: str) -> None:
        """400 naming the first part inferd cannot read (`where`: "messages.N")."""
        if isinstance(self.content, str):
            return
        for index, part in enumerate(self.content):
            field = f"{where}.content.{index}"
            if part.type != "text":
                raise BadRequest(
                    f"'{field}' is a {part.type!r} part: inferd reads text parts only",
                    param=f"{field}.type",
                )
            if part.text is None:
                raise BadRequest(f"missing required field '{field}.text'", param=f"{field}.text")

    def to_chat(self) -> ChatMessage:
        role = "system" if self.role == "developer" else self.role
        if isinstance(self.content, str):
            return ChatMessage(role, self.content)
        return ChatMessage(role, "".join(part.text or "" for part in self.content))


def check_messages(messages: list[Message]) -> None:
    for index, message in enumerate(messages):
        message.check(f"messages.{index}")


def split_system(
    messages: list[Message], session_id: str | None
) -> tuple[str | None, list[ChatMessage]]:
    """Leading system messages become the system prompt; the rest is the turn.

    A conversation of system messages alone is answered as OpenAI answers it (the
    template renders the system prompt, then the assistant's turn) -- but not in a
    session: there `messages` is a turn, and a stored answer with no user message
    before it would break the user/assistant alternation chat templates require.
    """
    chat = [message.to_chat() for message in messages]
    lead = 0
    while lead < len(chat) and chat[lead].role == "system":
        lead += 1
    if lead == len(chat) and session_id is not None:
        raise BadRequest(
            "in a session, 'messages' is the new turn and needs a user message; "
            "leading system messages sent with it replace the session's system prompt",
            param="messages",
        )
    system = "\n\n".join(m.content for m in chat[:lead]) if lead else None
    return system, chat[lead:]
