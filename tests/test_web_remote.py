"""The chat page in Chromium against a gateway whose only model is remote: streaming,
the server's token count, a session continued, and regenerate (a fork) -- the page
cannot tell the model is served by an upstream inferd over HTTP."""

from __future__ import annotations

import pytest

from inferd.app import create_app
from inferd.config import parse_config
from inferd.testing.fakes import REPLY, FakeBackend, make_app
from inferd.testing.live import live_server
from tests.browser import open_page

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_the_page_chats_with_a_remote_model(browser, tmp_path):
    model = {"id": "fake", "name": "fake/model", "path": "/nonexistent", "context_length": 256}
    upstream = make_app(tmp_path / "upstream", FakeBackend(step_delay=0.01), models=[model])
    async with live_server(upstream) as upstream_base:
        remote = {"id": "r", "name": "remote/model", "backend": "openai"}
        remote |= {"url": upstream_base + "/v1", "upstream_model": "fake/model"}
        config = parse_config({"sessions": {"path": str(tmp_path / "gw")}, "models": [remote]})
        gateway = create_app(config)
        async with live_server(gateway) as base, open_page(browser, f"{base}/") as web:
            await web.ready()
            page = web.page
            assert await page.input_value("#model") == "remote/model"
            await page.wait_for_selector("#status[data-state='ready']")

            await web.send("Hi there")
            await page.wait_for_selector("body.streaming")  # token by token
            assert await web.answer() == REPLY
            assert await page.inner_text("#counter-tokens") == f"{len(REPLY)} tokens"
            await web.send("And then?")
            assert await web.answer() == REPLY
            [sid] = gateway.ctx.sessions.store.ids()
            assert [m["content"] for m in gateway.ctx.sessions.store.get(sid).messages] == [
                "Hi there",
                REPLY,
                "And then?",
                REPLY,
            ]

            await page.click(".msg.assistant:last-child button:has-text('Regenerate')")
            await page.wait_for_function("() => document.querySelector('.switcher-count')")
            assert await web.answer() == REPLY
            assert len(gateway.ctx.sessions.store.ids()) == 2  # the fork
            assert web.unexpected_errors() == []
