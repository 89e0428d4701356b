"""Route bodies become one ParsedRequest shape."""

from __future__ import annotations

from inferd.backends.base import ChatMessage
from inferd.parsed_request import from_chat, from_completion
from inferd.schemas import ChatRequest, CompletionRequest, parse_body


def test_a_completion_carries_its_prompt_and_sampling() -> None:
    body = parse_body(
        CompletionRequest, {"model": "m", "prompt": "Once", "max_tokens": 7, "seed": 3}
    )
    parsed = from_completion(body, "json", owner="key-a")
    assert (parsed.endpoint, parsed.transport, parsed.model) == ("completions", "json", "m")
    assert parsed.prompt == "Once" and not parsed.is_chat
    assert parsed.params.max_tokens == 7 and parsed.params.seed == 3
    assert parsed.owner == "key-a" and parsed.session_id is None


def test_a_chat_turn_is_its_user_message_and_system_prompt() -> None:
    body = parse_body(
        ChatRequest, {"model-name": "m", "prompt": "Hi", "system-prompt": "Be brief", "top-k": 5}
    )
    parsed = from_chat(body, "sse", "fresh-id", owner=None)
    assert parsed.is_chat and parsed.endpoint == "chat"
    assert parsed.messages == [ChatMessage("user", "Hi")]
    assert parsed.system_prompt == "Be brief" and parsed.params.top_k == 5
    assert parsed.session_id == "fresh-id"  # the body named none


def test_the_body_session_id_wins_over_the_default() -> None:
    body = parse_body(ChatRequest, {"model-name": "m", "prompt": "Hi", "session-id": "mine"})
    assert from_chat(body, "websocket", "fresh-id", owner=None).session_id == "mine"
