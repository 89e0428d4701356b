"""inferd/openai/chunks.py: OpenAI's stream framing as pure functions."""

from __future__ import annotations

import json

from inferd.backends.base import GenerationStats, TokenEvent
from inferd.openai.chunks import DONE, ChatFrames, CompletionFrames


def _events(text: str) -> list[dict]:
    assert text.endswith("\n\n")
    return [json.loads(part.removeprefix("data: ")) for part in text.strip().split("\n\n")]


def _finished(reason="stop") -> GenerationStats:
    return GenerationStats(prompt_tokens=3, generated_tokens=2, finish_reason=reason)


def test_pieces_that_arrive_together_are_one_chunk():
    frames = ChatFrames("m", None)
    (chunk,) = _events(frames.events([TokenEvent(text="a\n"), TokenEvent(text="b")]))
    assert chunk["choices"][0]["delta"] == {"content": "a\nb"}
    assert chunk["object"] == "chat.completion.chunk" and chunk["id"] == frames.id
    assert frames.events([TokenEvent(finish_reason="stop")]) == ""


def test_the_last_chunk_carries_finish_reason_and_usage_then_done():
    closing = ChatFrames("m", None).closing(_finished("length"))
    assert closing.endswith(DONE)
    (last,) = _events(closing.removesuffix(DONE))
    assert last["choices"][0] == {
        "index": 0,
        "delta": {},
        "finish_reason": "length",
        "logprobs": None,
    }
    assert last["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


def test_include_usage_true_and_false():
    last, usage = _events(ChatFrames("m", True).closing(_finished()).removesuffix(DONE))
    assert last["usage"] is None and usage["choices"] == [] and usage["usage"]["total_tokens"] == 5
    (last,) = _events(CompletionFrames("m", False).closing(_finished()).removesuffix(DONE))
    assert last["usage"] is None and last["choices"][0]["text"] == ""


def test_an_error_event_and_a_failed_stream_ends_with_done_only():
    frames = CompletionFrames("m", None)
    text = frames.events([TokenEvent(text="x"), TokenEvent(finish_reason="error", error="boom")])
    chunk, error = _events(text)
    assert chunk["choices"][0]["text"] == "x"
    assert error == {
        "error": {
            "message": "generation failed: boom",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }
    assert frames.closing(_finished("error")) == DONE


def test_a_chat_stream_opens_with_the_role():
    (opening,) = _events(ChatFrames("m", None).opening())
    assert opening["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert CompletionFrames("m", None).opening() == ""
