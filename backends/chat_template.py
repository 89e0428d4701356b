"""A plain-text chat format for models whose tokenizer has no chat template.

Base models (stories260K, most GGUF conversions) ship no template. Rather than fail,
render the conversation as labelled turns ending with an open assistant turn, the
convention llama.cpp and Ollama fall back to for untemplated models.
"""

from __future__ import annotations

from collections.abc import Sequence

from inferd.backends.base import ChatMessage

_LABELS = {"system": "System", "user": "User", "assistant": "Assistant"}


def render_plain_chat(messages: Sequence[ChatMessage]) -> str:
    """Render messages as "Role: content" lines, ending with "Assistant:" for the reply."""
    lines = [f"{_LABELS[m.role]}: {m.content}" for m in messages]
    lines.append(f"{_LABELS['assistant']}:")
    return "\n".join(lines)
