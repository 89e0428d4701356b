"""The guardrail plugin, installed as a package and enabled by its entry-point name."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from inferd_guardrails.guardrail import GuardrailPlugin

from inferd.testing import (
    TRANSPORTS,
    FakeBackend,
    generate,
    live_server,
    make_app,
    metric_value,
    scrape_metrics,
)

ANSWER = "Well, darn it. What the Heck!"
MASKED = "Well, **** it. What the ****!"
ENDPOINT = {"json": "completions", "sse": "chat", "websocket": "chat"}


def guarded_app(tmp_path, reply: str = ANSWER, **guardrail):
    table = {"banned_words": ["darn", "heck"], **guardrail}
    return make_app(
        tmp_path,
        FakeBackend(reply=reply),
        plugins={"enabled": ["metrics", "guardrail"]},
        guardrail=table,
    )


def prompt_seen_by_the_model(app) -> str:
    return "".join(chr(token) for token in app.ctx.fake_backend.prompts[-1])


async def history(base: str, session_id: str) -> list[dict]:
    async with httpx.AsyncClient(base_url=base) as client:
        return (await client.get(f"/chat/history/{session_id}")).json()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_banned_words_in_answers_are_masked_and_stored_masked(tmp_path, transport):
    app = guarded_app(tmp_path)
    async with live_server(app) as base:
        reply = await generate(base, transport, session_id="s1")
        stored = await history(base, "s1") if transport != "json" else None
        metrics = await scrape_metrics(base)
    assert reply.text == MASKED  # the fake model spells it one character per token
    if stored is not None:
        assert stored[-1] == {"role": "assistant", "content": reply.text}
    assert metric_value(metrics, "guardrail_masked_words_total", where="answer") == 2


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_prompt_with_a_banned_word_is_refused_before_tokenisation(tmp_path, transport):
    app = guarded_app(tmp_path)
    async with live_server(app) as base:
        reply = await generate(base, transport, prompt="what the HECK")
        metrics = await scrape_metrics(base)
    message = "the prompt contains a word this server does not accept"
    assert (reply.status, reply.error) == (200 if transport == "websocket" else 400, message)
    assert app.ctx.fake_backend.prompts == []  # the model never saw it
    endpoint = ENDPOINT[transport]
    assert metric_value(metrics, "guardrail_refused_requests_total", endpoint=endpoint) == 1


async def test_prompts_and_sampling_are_rewritten(tmp_path):
    app = guarded_app(
        tmp_path, prompts="redact", system_prompt="Be polite.", max_tokens=5, reply="abcdefgh"
    )
    async with live_server(app) as base:
        chat = await generate(base, "sse", prompt="what the heck is darn")
        chat_prompt = prompt_seen_by_the_model(app)
        completion = await generate(base, "json", prompt="darn!")
        metrics = await scrape_metrics(base)
    assert "Be polite." in chat_prompt
    assert "what the **** is ****" in chat_prompt
    assert "heck" not in chat_prompt
    assert prompt_seen_by_the_model(app) == "****!"
    assert (chat.text, completion.text) == ("abcde", "abcde")  # max_tokens capped at 5
    assert metric_value(metrics, "guardrail_masked_words_total", where="prompt") == 3


async def test_answers_can_stop_before_a_banned_word(tmp_path):
    app = guarded_app(tmp_path, answers="stop", reply="Fine words, then darn and more words.")
    async with live_server(app) as base:
        reply = await generate(base, "json")
        metrics = await scrape_metrics(base)
        for _ in range(200):  # the engine drops the request and frees its cache
            if app.ctx.fake_backend.closed:
                break
            await asyncio.sleep(0.01)
    assert (reply.text, reply.finish_reason) == ("Fine words, then ", "content_filter")
    assert app.ctx.fake_backend.closed == 1
    labels = {"model": "fake/model", "endpoint": "completions", "finish_reason": "content_filter"}
    assert metric_value(metrics, "requests_finished_total", **labels) == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_failing_answer_check_fails_closed(tmp_path, transport, monkeypatch, caplog):
    def broken(self, generation, text, final):
        raise RuntimeError("bug in the guardrail")

    monkeypatch.setattr(GuardrailPlugin, "transform_output", broken)
    app = guarded_app(tmp_path)
    with caplog.at_level(logging.ERROR, logger="inferd.plugins"):
        async with live_server(app) as base:
            reply = await generate(base, transport)
            async with httpx.AsyncClient(base_url=base) as client:
                health = await client.get("/health")
    assert reply.text == ""  # no unchecked text reached the client
    assert "plugin 'guardrail' failed while filtering the output" in reply.error
    assert health.status_code == 200
    failures = [r for r in caplog.records if "failed in transform_output" in r.getMessage()]
    assert len(failures) == 1


async def test_a_failing_prompt_check_refuses_the_request(tmp_path, monkeypatch):
    def broken(self, request, parsed):
        raise RuntimeError("bug in the guardrail")

    monkeypatch.setattr(GuardrailPlugin, "transform_request", broken)
    app = guarded_app(tmp_path)
    async with live_server(app) as base:
        reply = await generate(base, "json")
    assert reply.status == 500
    assert reply.error.startswith("request refused: server plugin 'guardrail' failed")
    assert app.ctx.fake_backend.prompts == []


async def test_the_words_file_is_found_next_to_the_config(tmp_path, monkeypatch):
    (tmp_path / "banned.txt").write_text("# house rules\nwhat\n\nit\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path.parent)  # not where the config is
    app = guarded_app(tmp_path, banned_words=[], banned_words_file="banned.txt")
    async with live_server(app) as base:
        reply = await generate(base, "json")
    assert reply.text == "Well, darn ****. **** the Heck!"


async def test_switched_off_it_is_not_even_validated(tmp_path):
    app = guarded_app(tmp_path, enabled=False, banned_words_file="/no/such/file")
    async with live_server(app) as base:
        reply = await generate(base, "json")
    assert reply.text == ANSWER
