"""inferd.testing.sse: the SSE reader shared by the tests, plugin packages and the benchmarks."""

from __future__ import annotations

from inferd.testing.sse import SseDecoder, parse_sse


def feed_all(chunks: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    decoder = SseDecoder()
    events = [(e.name, e.data) for chunk in chunks for e in decoder.feed(chunk)]
    return events, decoder.comments


def test_whole_body_events_comments_and_named_events() -> None:
    stream = parse_sse(": keepalive\n\ndata: Hel\n\ndata: lo\n\nevent: error\ndata: boom\n\n")
    assert stream.text == "Hello"
    assert [e.data for e in stream.named("error")] == ["boom"]
    assert stream.comments == ["keepalive"]


def test_multi_line_data_joins_with_newline_and_one_leading_space_is_dropped() -> None:
    stream = parse_sse("data: a\ndata:  b\ndata:c\n\n")
    assert stream.events[0].data == "a\n b\nc"


def test_the_end_of_a_body_ends_its_last_line_but_not_a_cut_off_one() -> None:
    assert parse_sse("data: done\n\ndata: cut").text == "done"
    assert parse_sse("data: last line ended\n").text == "last line ended"
    assert parse_sse("data: lone CR\r").text == "lone CR"


def test_decoder_keeps_an_unfinished_event_until_its_blank_line_arrives() -> None:
    decoder = SseDecoder()
    assert decoder.feed("data: a\n") == []
    assert [e.data for e in decoder.feed("\n")] == ["a"]


def test_chunks_may_split_lines_and_fields_anywhere() -> None:
    body = "data: one\n\nevent: error\ndata: two\n\n"
    for cut in range(1, len(body)):
        events, _ = feed_all([body[:cut], body[cut:]])
        assert events == [("message", "one"), ("error", "two")], cut


def test_crlf_split_between_chunks_ends_one_line_not_two() -> None:
    # "data: a\r" | "\n" must not read as a line end followed by an empty line (which
    # would end the event early and turn the next data line into a second event).
    events, _ = feed_all(["data: a\r", "\ndata: b\r\n\r\n"])
    assert events == [("message", "a\nb")]


def test_lone_cr_and_lf_line_ends() -> None:
    events, comments = feed_all([": ping\rdata: x\r\r", "data: y\n\n"])
    assert events == [("message", "x"), ("message", "y")]
    assert comments == ["ping"]
