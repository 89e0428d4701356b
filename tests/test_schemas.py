"""inferd/schemas.py: request bodies, their defaults (API.md) and their 400 messages."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from inferd.backends.base import SamplingParams
from inferd.errors import BadRequest
from inferd.schemas import ChatRequest, CompletionRequest, RollbackRequest, parse_body

COMPLETION = {"model": "m", "prompt": "p"}
CHAT = {"model-name": "m", "prompt": "p"}


def _error(model, body) -> str:
    with pytest.raises(BadRequest) as caught:
        parse_body(model, body)
    assert caught.value.status == 400
    return caught.value.message


def test_completion_defaults_follow_the_api():
    body = parse_body(CompletionRequest, COMPLETION)
    assert body.max_tokens == 128
    assert body.temperature == 0.7
    assert body.top_p == 0.95
    assert body.stop == []
    assert body.stream is False
    assert body.device is None


def test_chat_defaults_follow_the_api():
    body = parse_body(ChatRequest, CHAT)
    assert body.session_id is None
    assert body.max_token == 512
    assert body.temperature == 0.7
    assert body.top_p == 0.95
    assert body.top_k == 40
    assert body.repeat_penalty == 1.1
    assert body.system_prompt is None
    assert body.stop == []
    assert body.device is None


def test_chat_fields_are_kebab_case():
    body = parse_body(
        ChatRequest,
        {
            **CHAT,
            "session-id": "abc-123",
            "max-token": 64,
            "top-p": 0.5,
            "top-k": 0,
            "repeat-penalty": 2,
            "system-prompt": "rules",
            "device": "cuda",
        },
    )
    assert body.model_name == "m"
    assert (body.session_id, body.max_token, body.top_p) == ("abc-123", 64, 0.5)
    assert (body.top_k, body.repeat_penalty, body.system_prompt) == (0, 2.0, "rules")
    assert body.device == "cuda"


def test_completion_sampling_parameters():
    body = parse_body(
        CompletionRequest,
        {**COMPLETION, "max_tokens": 9, "temperature": 0, "stop": ["\n"], "min_p": 0.1},
    )
    assert body.sampling() == SamplingParams(
        max_tokens=9,
        temperature=0.0,
        top_p=0.95,
        top_k=0,
        repeat_penalty=1.0,
        stop=("\n",),
        min_p=0.1,
    )


def test_chat_sampling_parameters():
    body = parse_body(
        ChatRequest,
        {**CHAT, "max-token": 7, "top-k": 3, "repeat-penalty": 1.3, "seed": 5, "min-p": 0.05},
    )
    assert body.sampling() == SamplingParams(
        max_tokens=7, temperature=0.7, top_p=0.95, top_k=3, repeat_penalty=1.3, seed=5, min_p=0.05
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"temperature": 0},
        {"temperature": 2},
        {"top_p": 1},
        {"top_p": 1e-6},
        {"max_tokens": 1},
        {"stop": []},
        {"stop": ["a"] * 16},
    ],
)
def test_completion_boundary_values_are_accepted(fields):
    parse_body(CompletionRequest, {**COMPLETION, **fields})


@pytest.mark.parametrize(
    "fields",
    [
        {"top-k": 0},
        {"repeat-penalty": 1},
        {"repeat-penalty": 2},
        {"max-token": 1},
        {"session-id": "A.b_c:d-1"},
        {"session-id": "x" * 128},
    ],
)
def test_chat_boundary_values_are_accepted(fields):
    parse_body(ChatRequest, {**CHAT, **fields})


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"temperature": 2.01}, "temperature"),
        ({"temperature": -1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.01}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": ["a"] * 17}, "stop"),
        ({"stop": [1]}, "stop.0"),
    ],
)
def test_completion_out_of_range_values_are_rejected_by_name(fields, field):
    message = _error(CompletionRequest, {**COMPLETION, **fields})
    assert message.startswith(f"invalid '{field}': ")
    assert "(got " in message  # the offending value is quoted


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"temperature": 2.5}, "temperature"),
        ({"top-p": 0}, "top-p"),
        ({"top-k": -1}, "top-k"),
        ({"repeat-penalty": 0.99}, "repeat-penalty"),
        ({"repeat-penalty": 2.01}, "repeat-penalty"),
        ({"min-p": -0.01}, "min-p"),
        ({"min-p": 1.01}, "min-p"),
        ({"max-token": 0}, "max-token"),
        ({"session-id": ""}, "session-id"),
        ({"session-id": "a/b"}, "session-id"),
        ({"session-id": "x" * 129}, "session-id"),
    ],
)
def test_chat_out_of_range_values_are_rejected_by_name(fields, field):
    assert _error(ChatRequest, {**CHAT, **fields}).startswith(f"invalid '{field}': ")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"max_tokens": "5"}, "max_tokens"),
        ({"max_tokens": 5.0}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"temperature": "0.5"}, "temperature"),
        ({"stream": 1}, "stream"),
        ({"stream": "true"}, "stream"),
        ({"prompt": 42}, "prompt"),
        ({"prompt": ["a"]}, "prompt"),
        ({"stop": "\n"}, "stop"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_mistyped_fields_are_rejected_without_coercion(fields, field):
    assert _error(CompletionRequest, {**COMPLETION, **fields}).startswith(f"invalid '{field}': ")


@pytest.mark.parametrize("seed", [-1, 2**63, 10**23])
def test_a_seed_must_fit_64_bit_generators(seed):
    for model, body in ((CompletionRequest, COMPLETION), (ChatRequest, CHAT)):
        assert _error(model, {**body, "seed": seed}).startswith("invalid 'seed': ")


def test_an_integer_is_a_valid_float():
    assert parse_body(CompletionRequest, {**COMPLETION, "temperature": 1}).temperature == 1.0


@pytest.mark.parametrize(
    ("model", "body", "missing"),
    [
        (CompletionRequest, {"prompt": "p"}, "model"),
        (CompletionRequest, {"model": "m"}, "prompt"),
        (ChatRequest, {"prompt": "p"}, "model-name"),
        (ChatRequest, {"model-name": "m"}, "prompt"),
    ],
)
def test_missing_fields_are_named(model, body, missing):
    assert _error(model, body) == f"missing required field '{missing}'"


def test_unknown_fields_are_named():
    assert _error(CompletionRequest, {**COMPLETION, "max_token": 5}) == (
        "unknown field 'max_token'"
    )
    # The chat API is kebab-case only: snake_case spellings are typos, not aliases.
    message = _error(ChatRequest, {**CHAT, "max_token": 5, "session_id": "s"})
    assert "unknown field 'max_token'" in message
    assert "unknown field 'session_id'" in message


def test_every_problem_is_reported_at_once():
    message = _error(ChatRequest, {"prompt": 1, "top-k": -1, "extra": True})
    assert "missing required field 'model-name'" in message
    assert "invalid 'prompt'" in message
    assert "invalid 'top-k'" in message
    assert "unknown field 'extra'" in message


@pytest.mark.parametrize("body", [None, [], "text", 3])
def test_a_body_that_is_not_an_object_is_rejected(body):
    assert _error(CompletionRequest, body) == "request body must be a JSON object"


def test_rollback_amount_defaults_to_one_and_must_be_positive():
    assert parse_body(RollbackRequest, {}).amount == 1
    assert parse_body(RollbackRequest, {"amount": 3}).amount == 3
    assert _error(RollbackRequest, {"amount": 0}).startswith("invalid 'amount'")


def test_requests_are_immutable():
    body = parse_body(CompletionRequest, COMPLETION)
    with pytest.raises(ValidationError, match="frozen"):
        body.prompt = "changed"
