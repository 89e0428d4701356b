"""inferd/openai/schemas.py: OpenAI's request bodies, and the parameters inferd refuses."""

from __future__ import annotations

import pytest

from inferd.errors import BadRequest
from inferd.openai.schemas import (
    CHAT_UNSUPPORTED,
    COMPLETION_UNSUPPORTED,
    NO_OPS,
    SEED_MAX,
    SEED_MIN,
    UNTIL_CONTEXT,
    ChatCompletionRequest,
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
    assert params.min_p == 0
    extras = {"top_k": -1, "repetition_penalty": 1.3, "stop": "\n", "max_tokens": 5, "min_p": 0.1}
    params = parse_body(ChatCompletionRequest, {**CHAT, **extras}).sampling(5)
    assert (params.top_k, params.repeat_penalty, params.stop) == (0, 1.3, ("\n",))
    assert params.min_p == 0.1
    with pytest.raises(BadRequest, match="min_p"):
        parse_body(TextCompletionRequest, {**COMPLETION, "min_p": 1.5})
    assert parse_body(TextCompletionRequest, COMPLETION).max_tokens == 16


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


@pytest.mark.parametrize(
    ("model", "base"), [(ChatCompletionRequest, CHAT), (TextCompletionRequest, COMPLETION)]
)
def test_integral_floats_are_integers(model, base):
    fields = {"max_tokens": 5.0, "seed": 7.0, "top_k": 40.0, "n": 1.0}
    refuse_unsupported({**base, **fields}, CHAT_UNSUPPORTED)
    body = parse_body(model, {**base, **fields})
    assert (body.max_tokens, body.seed, body.top_k, body.n) == (5, 7, 40, 1)
    assert type(body.max_tokens) is int
    for name in ("max_tokens", "seed", "top_k"):
        with pytest.raises(BadRequest, match="valid integer") as refused:
            parse_body(model, {**base, name: 5.5})
        assert refused.value.param == name
    with pytest.raises(BadRequest, match="valid integer"):
        parse_body(model, {**base, "max_tokens": True})
    with pytest.raises(BadRequest, match="'n'"):
        refuse_unsupported({**base, "n": 1.5}, CHAT_UNSUPPORTED)


def test_max_completion_tokens_may_be_an_integral_float_too():
    body = parse_body(ChatCompletionRequest, {**CHAT, "max_completion_tokens": 3.0})
    assert body.budget == 3


@pytest.mark.parametrize(
    ("seed", "used"),
    [(None, None), (0, 0), (42, 42), (SEED_MAX, SEED_MAX), (-1, 2**63 - 1), (-42, 2**63 - 42)],
)
def test_any_64_bit_seed_is_accepted_and_negatives_move_up(seed, used):
    body = parse_body(TextCompletionRequest, {**COMPLETION, "seed": seed})
    assert body.sampling(1).seed == used


def test_negative_seeds_reach_the_backends_range_without_meeting_small_ones():
    used = {
        parse_body(TextCompletionRequest, {**COMPLETION, "seed": s}).sampling(1).seed
        for s in range(-100, 100)
    }
    assert len(used) == 200 and all(0 <= seed <= SEED_MAX for seed in used)
    for seed in (SEED_MIN - 1, SEED_MAX + 1):
        with pytest.raises(BadRequest) as refused:
            parse_body(TextCompletionRequest, {**COMPLETION, "seed": seed})
        assert refused.value.param == "seed"


NO_OP_VALUES = {
    "prompt_cache_key": "user-42",
    "safety_identifier": "hash-of-user",
    "metadata": {"app": "notes"},
    "store": True,
    "service_tier": "flex",
    "reasoning_effort": "low",
    "verbosity": "medium",
}


def test_no_op_fields_are_accepted_on_chat_and_change_nothing():
    assert set(NO_OP_VALUES) == set(NO_OPS)
    plain = parse_body(ChatCompletionRequest, CHAT)
    body = {**CHAT, **NO_OP_VALUES, "parallel_tool_calls": False, "modalities": ["text"]}
    refuse_unsupported(body, CHAT_UNSUPPORTED)
    assert parse_body(ChatCompletionRequest, body).sampling(9) == plain.sampling(9)


def test_no_op_fields_are_still_typed():
    with pytest.raises(BadRequest) as refused:
        parse_body(ChatCompletionRequest, {**CHAT, "metadata": {"n": 1}})
    assert refused.value.param == "metadata.n"


def test_no_op_fields_are_chat_fields_only():
    for name, value in NO_OP_VALUES.items():
        with pytest.raises(BadRequest, match=f"unknown field '{name}'"):
            parse_body(TextCompletionRequest, {**COMPLETION, name: value})


@pytest.mark.parametrize(
    ("model", "base"), [(ChatCompletionRequest, CHAT), (TextCompletionRequest, COMPLETION)]
)
def test_stream_options_include_obfuscation_is_accepted(model, base):
    options = {"include_usage": True, "include_obfuscation": False}
    body = parse_body(model, {**base, "stream": True, "stream_options": options})
    body.check()
    with pytest.raises(BadRequest, match=r"unknown field 'stream_options\.obfuscate'"):
        parse_body(model, {**base, "stream": True, "stream_options": {"obfuscate": True}})


def test_unknown_fields_are_still_refused():
    with pytest.raises(BadRequest, match="unknown field 'frobnicate'"):
        parse_body(ChatCompletionRequest, {**CHAT, "frobnicate": 1})
