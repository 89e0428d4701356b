"""inferd/prompting.py: prompt ids within the context window, trimming old chat turns."""

from __future__ import annotations

import pytest

from inferd.backends.base import ChatMessage, ModelInfo
from inferd.errors import BadRequest
from inferd.prompting import chat_prompt, completion_prompt, reply_room
from inferd.testing.fakes import EOS, FakeBackend


def _info(context_length: int) -> ModelInfo:
    return ModelInfo(context_length, frozenset({EOS}), has_chat_template=False)


def _text(ids: list[int]) -> str:
    return "".join(chr(i) for i in ids)


def _conversation(turns: int, system: str | None = "Rules.") -> list[ChatMessage]:
    messages = [ChatMessage("system", system)] if system else []
    for number in range(turns):
        messages.append(ChatMessage("user", f"question {number}"))
        messages.append(ChatMessage("assistant", f"answer {number}"))
    messages.append(ChatMessage("user", "latest"))
    return messages


def test_completion_prompt_is_the_raw_text():
    assert completion_prompt(FakeBackend(), _info(64), "Once upon") == [ord(c) for c in "Once upon"]


def test_completion_prompt_must_leave_room_for_one_token():
    backend = FakeBackend()
    assert len(completion_prompt(backend, _info(10), "x" * 9)) == 9
    with pytest.raises(BadRequest) as caught:
        completion_prompt(backend, _info(10), "x" * 10)
    assert caught.value.message.startswith("prompt too long: 10 tokens")
    assert "context is 10 tokens" in caught.value.message


def test_reply_room_is_max_tokens_up_to_a_quarter_of_the_context():
    assert reply_room(_info(400), 10) == 10
    assert reply_room(_info(400), 512) == 100


def test_a_conversation_that_fits_is_sent_whole():
    messages = _conversation(2)
    ids, dropped = chat_prompt(FakeBackend(), _info(1000), messages, 50)
    assert dropped == 0
    assert _text(ids) == (
        "System: Rules.\nUser: question 0\nAssistant: answer 0\n"
        "User: question 1\nAssistant: answer 1\nUser: latest\nAssistant:"
    )


def test_the_oldest_turns_are_dropped_first_keeping_system_and_latest():
    messages = _conversation(10)
    full = len(FakeBackend().encode_chat(messages))
    # Room for roughly half of the history, with 10 tokens kept for the reply.
    context = full // 2 + 10
    ids, dropped = chat_prompt(FakeBackend(), _info(context), messages, 10)
    text = _text(ids)
    assert len(ids) <= context - 10
    assert dropped > 0
    assert dropped % 2 == 0  # whole turns: a question and its answer
    assert text.startswith("System: Rules.\n")
    assert text.endswith("User: latest\nAssistant:")
    first_kept = dropped // 2
    assert f"question {first_kept - 1}\n" not in text
    assert f"User: question {first_kept}\nAssistant: answer {first_kept}\n" in text
    # As much history as fits is kept: one more turn would not have fit.
    one_more = [messages[0], *messages[1 + dropped - 2 :]]
    assert len(FakeBackend().encode_chat(one_more)) > context - 10


def test_trimming_without_a_system_prompt_keeps_the_latest_message():
    messages = _conversation(10, system=None)
    ids, dropped = chat_prompt(FakeBackend(), _info(80), messages, 8)
    assert dropped > 0
    assert _text(ids).endswith("User: latest\nAssistant:")
    assert "System:" not in _text(ids)


def test_a_lone_user_message_left_by_a_rollback_is_dropped_on_its_own():
    messages = [
        ChatMessage("system", "S"),
        ChatMessage("user", "dangling question " * 3),
        ChatMessage("user", "q"),
        ChatMessage("assistant", "a"),
        ChatMessage("user", "latest"),
    ]
    ids, dropped = chat_prompt(FakeBackend(), _info(60), messages, 4)
    assert dropped == 1
    assert _text(ids) == "System: S\nUser: q\nAssistant: a\nUser: latest\nAssistant:"


def test_everything_old_is_dropped_before_giving_up():
    messages = _conversation(3)
    only_new = [messages[0], messages[-1]]
    needed = len(FakeBackend().encode_chat(only_new))
    ids, dropped = chat_prompt(FakeBackend(), _info(needed + 1), messages, 1)
    assert dropped == 6
    assert _text(ids) == "System: Rules.\nUser: latest\nAssistant:"


def test_a_system_prompt_and_message_too_long_for_the_context_is_a_400():
    messages = [ChatMessage("system", "S" * 50), ChatMessage("user", "x" * 50)]
    with pytest.raises(BadRequest, match="prompt too long"):
        chat_prompt(FakeBackend(), _info(64), messages, 8)


def test_the_latest_message_may_use_the_reply_room_when_nothing_else_is_left():
    # The reply room is a target for trimming, not a hard limit: a long question with
    # no history is still answered while one token of context is free.
    message = [ChatMessage("user", "x" * 40)]
    length = len(FakeBackend().encode_chat(message))
    ids, dropped = chat_prompt(FakeBackend(), _info(length + 1), message, 100)
    assert (len(ids), dropped) == (length, 0)


def test_a_system_message_alone_is_rendered_once():
    # OpenAI answers a conversation of system messages only; the template gets it once.
    ids, dropped = chat_prompt(FakeBackend(), _info(64), [ChatMessage("system", "Rules.")], 8)
    assert (_text(ids), dropped) == ("System: Rules.\nAssistant:", 0)
