"""inferd/openai/schemas.py: OpenAI's request bodies, and the parameters inferd refuses."""

from __future__ import annotations

import pytest

from inferd.backends.base import ChatMessage
from inferd.errors import BadRequest
from inferd.openai.schemas import (
    CHAT_UNSUPPORTED,
    COMPLETION_UNSUPPORTED,
    UNTIL_CONTEXT,
    ChatCompletionRequest,
    Message,
    TextCompletionRequest,
    refuse_unsupported,
)
from inferd.schemas import parse_body

CHAT = {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}
COMPLETION = {"model": "m", "prompt": "Once"}
TABLES = [
    (ChatCompletionRequest, CHAT, CHAT_UNSUPPORTED),
    (TextCompletionRequest, COMPLETION, COMPLETION_UNSUPPORTED),
]


@pytest.mark.parametrize(("model", "base", "table"), TABLES)
def test_every_off_value_the_table_accepts_the_schema_accepts_too(model, base, table):
    for name, (off_values, _) in table.items():
        assert name in model.model_fields, name
        for value in (None, *off_values):
            refuse_unsupported({**base, name: value}, table)
            parse_body(model, {**base, name: value})


@pytest.mark.parametrize(("model", "base", "table"), TABLES)
def test_any_other_value_is_refused_by_name(model, base, table):
    for name in table:
        with pytest.raises(BadRequest) as refused:
            refuse_unsupported({**base, name: "something"}, table)
        assert refused.value.param == name and f"'{name}'" in refused.value.message


def test_true_is_not_one():
    with pytest.raises(BadRequest):
        refuse_unsupported({**CHAT, "n": True}, CHAT_UNSUPPORTED)


def test_openai_defaults_and_inferd_extras_become_sampling_params():
    body = parse_body(ChatCompletionRequest, CHAT)
    params = body.sampling(body.budget)
    assert (params.temperature, params.top_p, params.top_k, params.repeat_penalty) == (1, 1, 0, 1)
    assert params.max_tokens == UNTIL_CONTEXT and params.stop == ()
    extras = {"top_k": -1, "repetition_penalty": 1.3, "stop": "\n", "max_tokens": 5}
    params = parse_body(ChatCompletionRequest, {**CHAT, **extras}).sampling(5)
    assert (params.top_k, params.repeat_penalty, params.stop) == (0, 1.3, ("\n",))
    assert parse_body(TextCompletionRequest, COMPLETION).max_tokens == 16


def test_message_content_parts_join_and_developer_is_system():
    message = Message.model_validate(
        {
            "role": "developer",
            "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
        }
    )
    assert message.to_chat() == ChatMessage("system", "ab")
    with pytest.raises(BadRequest):
        parse_body(Message, {"role": "user", "content": [{"type": "image_url", "image_url": {}}]})


def test_checks_the_types_cannot_make():
    with pytest.raises(BadRequest, match="list of 2"):
        parse_body(TextCompletionRequest, {**COMPLETION, "prompt": ["a", "b"]}).check()
    with pytest.raises(BadRequest, match="disagree"):
        parse_body(
            ChatCompletionRequest, {**CHAT, "max_tokens": 1, "max_completion_tokens": 2}
        ).check()
    with pytest.raises(BadRequest, match="only allowed"):
        parse_body(ChatCompletionRequest, {**CHAT, "stream_options": {}}).check()
    with pytest.raises(BadRequest, match="at most 16 items"):
        parse_body(ChatCompletionRequest, {**CHAT, "stop": ["x"] * 17})
