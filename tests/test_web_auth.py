"""The chat page with auth on (web/src/auth.js, status.js): a 401 opens the key prompt,
the status says "Unauthorized" rather than "Connected", and the key is kept where the
user chose (this tab by default, this device on request)."""

from __future__ import annotations

import pytest

from inferd.plugins.auth import key_digest
from inferd.testing.fakes import REPLY, make_app
from inferd.testing.live import live_server
from tests.browser import WebPage, open_page

pytestmark = pytest.mark.asyncio(loop_scope="module")

KEY = "web-key"
STORED = (
    """() => [sessionStorage.getItem('inferd.apiKey'), localStorage.getItem('inferd.apiKey')]"""
)


async def enter_key(web: WebPage, key: str, remember: bool = False) -> None:
    await web.page.wait_for_selector("#key-dialog[open]")
    await web.page.fill("#key-input", key)
    if remember:
        await web.page.check("#key-dialog-remember")
    await web.page.press("#key-input", "Enter")


async def test_a_401_asks_for_a_key_and_the_status_says_unauthorized(browser, tmp_path):
    app = make_app(tmp_path, auth={"enabled": True, "api_keys": [KEY]})
    async with live_server(app) as base, open_page(browser, f"{base}/") as web:
        page = web.page
        await web.ready()
        # /readiness is public and says "ready"; the refused API calls decide the status.
        await page.wait_for_selector("#key-dialog[open]")
        assert "missing API key" in await page.inner_text("#key-dialog .dialog-reason")
        assert await page.inner_text("#status .status-text") == "Unauthorized"
        assert await page.get_attribute("#status", "data-tone") == "bad"

        # A wrong key: still unauthorized, and asked again.
        await enter_key(web, "wrong")
        await page.wait_for_selector("#key-dialog[open] .dialog-reason:has-text('invalid API key')")
        assert await page.inner_text("#status .status-text") == "Unauthorized"

        # The right one: kept for this tab only (sessionStorage), by default.
        await enter_key(web, KEY)
        await page.wait_for_selector("#status[data-state='ready']")
        assert await page.inner_text("#status .status-text") == "Connected"
        assert await page.input_value("#model") == "fake/model"
        assert await web.evaluate(STORED) == [KEY, None]
        await web.send("Hi with a key")
        assert await web.answer() == REPLY
        assert len(app.ctx.sessions.store.ids(key_digest(KEY))) == 1

        # A reload in the same tab keeps it; "Remember" in Settings moves it to the device.
        await page.reload()
        await web.ready()
        await page.wait_for_selector("#status[data-state='ready']")
        assert await page.locator(".session").count() == 1
        await page.click("#toggle-settings")
        assert await page.input_value("#api-key") == KEY
        await page.check("#key-remember")
        assert await web.evaluate(STORED) == [None, KEY]
        assert web.unexpected_errors() == []


async def test_a_declined_prompt_stays_closed_until_the_status_is_clicked(browser, tmp_path):
    app = make_app(tmp_path, auth={"enabled": True, "api_keys": [KEY]})
    async with live_server(app) as base, open_page(browser, f"{base}/") as web:
        page = web.page
        await web.ready()
        await page.wait_for_selector("#key-dialog[open]")
        await page.click("#key-dialog .dialog-cancel")
        await page.wait_for_selector("#key-dialog", state="hidden")
        # More refused calls (a refresh) do not nag again...
        await page.click("#banner-close")
        await web.evaluate("() => window.dispatchEvent(new Event('online'))")
        assert "missing API key" in await web.banner()
        assert not await page.is_visible("#key-dialog")
        assert await page.inner_text("#status .status-text") == "Unauthorized"
        # ...but the status, clicked, asks; "Remember" keeps the key on this device.
        await page.click("#status")
        await enter_key(web, KEY, remember=True)
        await page.wait_for_selector("#status[data-state='ready']")
        assert await web.evaluate(STORED) == [None, KEY]
        await page.reload()
        await web.ready()
        await page.wait_for_selector("#status[data-state='ready']")
        assert not await page.is_visible("#key-dialog")


async def test_a_browser_websocket_sends_its_key_as_a_subprotocol(browser, tmp_path):
    # `new WebSocket(url)` cannot set Authorization: the key goes as a subprotocol.
    app = make_app(tmp_path, auth={"enabled": True, "api_keys": [KEY]})
    script = """async (key) => {
        const encoded = btoa(key).replace(/\\+/g, "-").replace(/\\//g, "_").replace(/=+$/, "");
        const ws = new WebSocket(`ws://${location.host}/chat/ws`,
                                 ["inferd.bearer", "inferd.key." + encoded]);
        return await new Promise((resolve, reject) => {
            let text = "";
            ws.onopen = () => ws.send(JSON.stringify({"model-name": "fake/model", prompt: "Hi"}));
            ws.onmessage = (event) => {
                if (event.data === "__END__") resolve([ws.protocol, text]);
                else text += event.data;
            };
            ws.onerror = () => reject(new Error("handshake failed"));
        });
    }"""
    async with live_server(app) as base, open_page(browser, f"{base}/") as web:
        protocol, answer = await web.page.evaluate(script, KEY)
    assert (protocol, answer) == ("inferd.bearer", REPLY)
