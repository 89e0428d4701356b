"""inferd/openai/messages.py: chat messages as clients send them, and inferd's view of them."""

from __future__ import annotations

import pytest

from inferd.backends.base import ChatMessage
from inferd.errors import BadRequest
from inferd.openai.messages import Message, check_messages, split_system
from inferd.schemas import parse_body


def _message(**fields) -> Message:
    message = parse_body(Message, {"role": "user", "content": "Hi", **fields})
    message.check("messages.0")
    return message


def test_developer_is_system_and_text_parts_join():
    message = _message(
        role="developer", content=[{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    )
    assert message.to_chat() == ChatMessage("system", "ab")


@pytest.mark.parametrize("role", ["system", "developer", "user", "assistant"])
def test_a_name_is_accepted_on_any_role_and_dropped(role):
    # LangChain sends `name` whenever a message has one.
    named = _message(role=role, name="bob")
    assert named.to_chat() == _message(role=role).to_chat()


def test_a_name_must_be_a_string():
    with pytest.raises(BadRequest, match="'name'"):
        _message(name=7)


def test_unknown_keys_of_a_text_part_are_ignored():
    # Open WebUI marks parts for Anthropic's prompt cache.
    part = {"type": "text", "text": "Hi", "cache_control": {"type": "ephemeral"}}
    assert _message(content=[part]).to_chat() == ChatMessage("user", "Hi")


def test_unknown_keys_of_the_message_itself_are_still_refused():
    with pytest.raises(BadRequest, match="unknown field 'cache_control'"):
        _message(cache_control={"type": "ephemeral"})


def test_a_part_that_is_not_text_is_refused_by_its_type():
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    with pytest.raises(BadRequest) as refused:
        _message(content=[{"type": "text", "text": "What is this?"}, image])
    assert refused.value.param == "messages.0.content.1.type"
    assert "'image_url' part" in refused.value.message and "AAAA" not in refused.value.message


def test_a_text_part_needs_its_text():
    with pytest.raises(BadRequest) as refused:
        _message(content=[{"type": "text"}])
    assert refused.value.param == "messages.0.content.0.text"


def test_check_messages_names_the_message():
    messages = [_message(), parse_body(Message, {"role": "user", "content": [{"type": "x"}]})]
    with pytest.raises(BadRequest) as refused:
        check_messages(messages)
    assert refused.value.param == "messages.1.content.0.type"


def test_leading_system_messages_become_the_system_prompt():
    messages = [_message(role="system", content="A"), _message(role="developer", content="B")]
    system, turn = split_system([*messages, _message()], None)
    assert (system, turn) == ("A\n\nB", [ChatMessage("user", "Hi")])


def test_system_messages_alone_are_a_conversation_without_a_session():
    system, turn = split_system([_message(role="system", content="Be brief.")], None)
    assert (system, turn) == ("Be brief.", [])


def test_system_messages_alone_are_no_turn_of_a_session():
    with pytest.raises(BadRequest, match="needs a user message") as refused:
        split_system([_message(role="system", content="Be brief.")], "s1")
    assert refused.value.param == "messages"
