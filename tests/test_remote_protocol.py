"""inferd/remote/protocol.py: OpenAI request bodies, chunks and failures."""

from __future__ import annotations

import httpx
import pytest

from inferd.backends.base import ChatMessage, SamplingParams
from inferd.remote.protocol import (
    Chunk,
    UpstreamFailure,
    failure_of_error,
    failure_of_status,
    read_chunk,
    request_for,
)


def test_a_chat_goes_upstream_as_messages_with_its_sampling():
    params = SamplingParams(max_tokens=50, temperature=0.2, top_p=0.9, stop=("\n",), seed=7)
    messages = [ChatMessage("system", "be brief"), ChatMessage("user", "hi")]
    request = request_for("up/model", messages, params, context_length=4096, extensions=True)
    assert request.path == "/chat/completions"
    assert request.body == {
        "model": "up/model",
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.2,
        "top_p": 0.9,
        "max_tokens": 50,
        "stop": ["\n"],
        "seed": 7,
        "top_k": 40,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
        ],
    }


def test_a_completion_goes_upstream_as_a_prompt():
    request = request_for("m", "Once", SamplingParams(), context_length=512, extensions=True)
    assert request.path == "/completions"
    assert request.body["prompt"] == "Once"


def test_extensions_are_sent_only_when_asked_for_and_allowed():
    params = SamplingParams(top_k=5, repeat_penalty=1.1, presence_penalty=0.5, min_p=0.05)
    on = request_for("m", "x", params, context_length=512, extensions=True).body
    off = request_for("m", "x", params, context_length=512, extensions=False).body
    assert (on["top_k"], on["repetition_penalty"], on["min_p"]) == (5, 1.1, 0.05)
    assert not {"top_k", "repetition_penalty", "min_p"} & off.keys()
    assert off["presence_penalty"] == 0.5  # OpenAI's own: always sent
    plain = request_for("m", "x", SamplingParams(top_k=0), context_length=512, extensions=True)
    assert not {"top_k", "repetition_penalty", "min_p"} & plain.body.keys()


def test_a_budget_past_the_context_is_left_to_the_upstream():
    params = SamplingParams(max_tokens=2**31 - 1)
    assert (
        "max_tokens" not in request_for("m", "x", params, context_length=512, extensions=True).body
    )


@pytest.mark.parametrize(
    ("data", "chunk"),
    [
        ('{"choices":[{"delta":{"role":"assistant"},"finish_reason":null}]}', Chunk()),
        ('{"choices":[{"delta":{"content":"Hi"},"finish_reason":null}]}', Chunk("Hi")),
        ('{"choices":[{"text":" there","finish_reason":"length"}]}', Chunk(" there", "length")),
        ('{"choices":[{"delta":{},"finish_reason":"eos"}]}', Chunk("", "stop")),
        (
            '{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":9}}',
            Chunk(prompt_tokens=3, completion_tokens=9),
        ),
    ],
)
def test_chunks_are_read(data, chunk):
    assert read_chunk(data) == chunk


def test_a_role_chunk_says_nothing():
    assert not read_chunk('{"choices":[{"delta":{"role":"assistant"}}]}').says_something
    assert read_chunk('{"choices":[{"delta":{"content":"a"}}]}').says_something


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ('{"error": {"message": "CUDA out of memory"}}', "failed: CUDA out of memory"),
        ("not json", "not a JSON object"),
        ("[1, 2]", "not a JSON object"),
    ],
)
def test_errors_and_nonsense_in_a_stream_are_failures(data, fragment):
    with pytest.raises(UpstreamFailure, match=fragment) as caught:
        read_chunk(data)
    assert caught.value.status == 502


@pytest.mark.parametrize(
    ("status", "body", "expected", "retry", "fragment"),
    [
        (
            400,
            b'{"error": {"message": "too long"}}',
            400,
            False,
            "rejected the request (400): too long",
        ),
        (422, b'{"detail": "bad field"}', 400, False, "rejected the request (422): bad field"),
        (401, b'{"error": "Unauthorized"}', 502, False, "refused inferd's credentials (401)"),
        (404, b"Not Found", 502, False, "check upstream_model and url"),
        (429, b"slow down", 503, True, "is overloaded (429): slow down"),
        (503, b"", 503, True, "is overloaded (503): no message"),
        (500, b'{"message": "boom"}', 502, True, "failed (500): boom"),
    ],
)
def test_error_statuses_become_what_the_client_is_told(status, body, expected, retry, fragment):
    failure = failure_of_status(status, body)
    assert (failure.status, failure.retry) == (expected, retry)
    assert fragment in failure.reason


def test_a_rejected_request_keeps_the_upstream_s_error_code():
    body = b'{"error": {"message": "too long", "code": "context_length_exceeded"}}'
    assert failure_of_status(400, body).code == "context_length_exceeded"
    assert failure_of_status(400, b'{"error": "too long"}').code is None
    assert failure_of_status(400, b"not json").code is None
    assert failure_of_status(500, body).code is None  # not a verdict on the request


def test_transport_errors_become_what_the_client_is_told():
    refused = failure_of_error(httpx.ConnectError("Connection refused"), 5)
    slow = failure_of_error(httpx.ReadTimeout("timed out"), 2.5)
    dropped = failure_of_error(httpx.RemoteProtocolError("incomplete chunked read"), 5)
    assert (refused.status, refused.reason) == (503, "cannot be reached (Connection refused)")
    assert (slow.status, slow.reason) == (504, "did not answer within 2.5 s")
    assert dropped.status == 502 and "closed the connection" in dropped.reason
    assert all(f.retry for f in (refused, slow, dropped))
