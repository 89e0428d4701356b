"""inferd/sse.py: SSE framing, checked against a spec-following parser."""

from __future__ import annotations

import json

import pytest

from inferd import sse
from inferd.backends.base import GenerationStats
from inferd.testing.sse import parse_sse


def test_token_event_is_one_data_line_and_a_blank_line():
    assert sse.token_event("Hello") == "data: Hello\n\n"


def test_leading_space_of_a_token_survives_the_round_trip():
    assert sse.token_event(" there") == "data:  there\n\n"
    assert parse_sse(sse.token_event(" there")).text == " there"


def test_a_token_with_newlines_is_one_event_of_several_data_lines():
    framed = sse.token_event("a\nb\n")
    assert framed == "data: a\ndata: b\ndata: \n\n"
    events = parse_sse(framed).events
    assert len(events) == 1
    assert events[0].data == "a\nb\n"


@pytest.mark.parametrize(
    "tokens",
    [
        ["Hello", " there", "!\n", "How", "\n\n", " can", " I", " help?"],
        ["\n"],
        ["", "x", ""],
        ["tab\there", "  two spaces", ":colon", "data: lookalike"],
    ],
)
def test_streamed_tokens_concatenate_to_the_original_text(tokens):
    body = "".join(sse.token_event(token) for token in tokens)
    assert parse_sse(body).text == "".join(tokens)


def test_carriage_returns_do_not_lose_text():
    # SSE clients treat a lone CR as a line end: text after it must not become a
    # "field name" and vanish. SSE cannot carry CR itself, so it arrives as LF.
    body = sse.token_event("one\rtwo") + sse.token_event("three\r\nfour")
    assert parse_sse(body).text == "one\ntwothree\nfour"


def test_as_received_is_what_a_client_reads_of_a_token_event():
    text = "one\rtwo\r\nthree\nfour"
    assert sse.as_received(text) == parse_sse(sse.token_event(text)).text == "one\ntwo\nthree\nfour"


def test_named_event_carries_its_name_and_data():
    framed = sse.named_event("error", "fake failure")
    assert framed == "event: error\ndata: fake failure\n\n"
    (event,) = parse_sse(framed).events
    assert (event.name, event.data) == ("error", "fake failure")


def test_keepalive_is_a_comment_that_clients_ignore():
    body = sse.KEEPALIVE + sse.token_event("x") + sse.KEEPALIVE
    parsed = parse_sse(body)
    assert parsed.comments == ["keepalive", "keepalive"]
    assert [event.data for event in parsed.events] == ["x"]


def test_content_type_and_headers_disable_caching_and_proxy_buffering():
    assert sse.CONTENT_TYPE.startswith("text/event-stream")
    assert sse.HEADERS["Cache-Control"] == "no-cache"
    assert sse.HEADERS["X-Accel-Buffering"] == "no"


def test_usage_comment_reports_the_servers_counts_and_times():
    stats = GenerationStats(
        prompt_tokens=7, generated_tokens=3, queued_at=10.0, first_token_at=10.25, finished_at=11.0
    )
    framed = sse.usage_comment(stats)
    assert framed.startswith(": usage {") and framed.endswith("}\n\n")
    stream = parse_sse(framed)
    assert stream.events == []  # a comment: SSE clients that did not ask never see it
    assert json.loads(stream.comments[0].removeprefix("usage ")) == {
        "prompt_tokens": 7,
        "completion_tokens": 3,
        "first_token_seconds": 0.25,
        "decode_seconds": 0.75,
    }


def test_usage_comment_without_a_first_token_has_no_timings():
    usage = sse.usage_comment(GenerationStats(prompt_tokens=2))
    assert '"first_token_seconds":null,"decode_seconds":null' in usage
