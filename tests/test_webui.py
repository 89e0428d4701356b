"""The web chat page: GET /, its /static assets, and the page itself in a real browser."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from inferd.plugins.auth import key_digest
from inferd.testing.fakes import REPLY, make_app
from inferd.testing.live import live_server
from inferd.webui import CONTENT_TYPES
from tests.browser import Page, chromium_page, find_chromium

WEB = resources.files("inferd.web")
ASSETS = sorted(entry.name for entry in WEB.iterdir() if entry.name.endswith((".js", ".css")))


async def test_index_serves_the_page(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    _, response = await app.asgi_client.get("/")
    assert response.status == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert '<script type="module" src="/static/app.js">' in response.text
    # A strict policy: only this server's own scripts, no inline script at all.
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("name", ASSETS)
async def test_static_assets_are_served_with_their_type(tmp_path: Path, name: str) -> None:
    app = make_app(tmp_path)
    _, response = await app.asgi_client.get(f"/static/{name}")
    assert response.status == 200
    assert response.headers["content-type"] == CONTENT_TYPES[Path(name).suffix]
    assert response.body == WEB.joinpath(name).read_bytes()


def test_everything_the_page_loads_is_shipped() -> None:
    """Every /static URL in the page and every module a script imports is package data."""
    page = WEB.joinpath("index.html").read_text(encoding="utf-8")
    wanted = set(re.findall(r'"/static/([^"]+)"', page))
    for name in ASSETS:
        if name.endswith(".js"):
            text = WEB.joinpath(name).read_text(encoding="utf-8")
            wanted |= set(re.findall(r'from "\./([^"]+)"', text))
    assert wanted
    assert wanted <= set(ASSETS)


async def test_static_revalidation_answers_304(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    _, first = await app.asgi_client.get("/static/app.js")
    etag = first.headers["etag"]
    _, again = await app.asgi_client.get("/static/app.js", headers={"If-None-Match": etag})
    assert again.status == 304
    assert again.body == b""


@pytest.mark.parametrize(
    "path",
    [
        "/static/nope.js",
        "/static/index.html",  # the page lives at "/" only
        "/static/__init__.py",
        "/static/..%2Fwebui.py",
        "/static/%2e%2e%2f%2e%2e%2fpyproject.toml",
        "/static/../inferd/webui.py",
        "/static/sub/app.js",
    ],
)
async def test_unknown_or_traversing_static_names_are_404(tmp_path: Path, path: str) -> None:
    app = make_app(tmp_path)
    _, response = await app.asgi_client.get(path)
    assert response.status == 404
    assert isinstance(response.json["error"], str)


# ---- the page in a real browser -----------------------------------------------------

CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium found (apt-get install chromium, or set INFERD_CHROMIUM)",
)

# JavaScript probes, kept here so the test reads as steps.
LAST_ANSWER = """(() => {
  const done = document.querySelector('.msg.assistant:last-child:not(.streaming) .msg-content');
  return !document.body.classList.contains('streaming') && done ? done.innerText : null;
})()"""
SSE_CASES = """(async () => {
  const { SseParser } = await import('/static/sse.js');
  const parser = new SseParser();
  const chunks = ['data: Hel', 'lo\\n\\n: keepalive\\n\\ndata: a\\ndata: b\\n\\n',
    'event: error\\ndata:  two spaces\\r', '\\n\\r\\n', 'data:x\\n\\nevent: lonely\\n\\n'];
  return chunks.flatMap((chunk) => parser.feed(chunk));
})()"""
HOSTILE_MARKDOWN = """(async () => {
  const { renderMarkdown } = await import('/static/markdown.js');
  const box = document.createElement('div');
  const text = '<img src=x onerror="window.pwned=1">\\n'
    + '```python\\nx = "<b>hi</b>"  # note\\n```';
  box.append(renderMarkdown(text));
  return { elements: box.querySelectorAll('img, b').length, text: box.textContent,
           spans: box.querySelectorAll('pre span').length };
})()"""


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.05)


def read_json_file(folder: Path) -> Any:
    """The one *.json file in `folder`, decoded; None while it is absent or incomplete."""
    try:
        return json.loads(next(folder.glob("*.json")).read_text())
    except (StopIteration, ValueError):
        return None


async def send_prompt(page: Page, text: str) -> None:
    await page.evaluate("document.querySelector('#prompt').focus()")
    await page.type(text)
    await page.press("Enter", 13)


@needs_chromium
async def test_chat_in_a_real_browser(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    backend = app.ctx.fake_backend
    sessions = app.ctx.sessions
    assert CHROMIUM is not None
    async with (
        live_server(app) as base,
        chromium_page(CHROMIUM, f"{base}/", tmp_path / "chromium") as page,
    ):
        await page.wait_for("document.body?.classList.contains('ready')")
        assert await page.evaluate("document.querySelector('#model').value") == "fake/model"
        await page.wait_for("document.querySelector('#status').dataset.tone === 'ok'")

        # Type, send with Enter, and watch the streamed answer arrive.
        await send_prompt(page, "Hi there")
        assert await page.wait_for(LAST_ANSWER) == REPLY
        [session_id] = sessions.ids()
        title = f".session[data-session-id='{session_id}'] .session-title"
        assert await page.wait_for(f"document.querySelector({json.dumps(title)})?.innerText")
        assert await page.evaluate(f"document.querySelector({json.dumps(title)}).innerText") == (
            "Hi there"
        )
        tokens = await page.evaluate("document.querySelector('#counter-tokens').innerText")
        assert tokens == f"{len(REPLY)} tokens"
        if os.environ.get("INFERD_WEB_SCREENSHOT"):
            await page.screenshot(os.environ["INFERD_WEB_SCREENSHOT"])

        # Regenerate: the last exchange is rolled back and asked again.
        await page.click(".msg.assistant:last-child button[title^='Ask again']")
        await eventually(lambda: len(backend.prompts) == 2)
        assert await page.wait_for(LAST_ANSWER) == REPLY
        assert [m["content"] for m in sessions.get(session_id).messages] == ["Hi there", REPLY]

        # Edit the first question: the conversation branches from there.
        await page.click(".msg.user button[title^='Edit']")
        await page.evaluate("document.querySelector('.msg.edit textarea').select()")
        await page.type("Edited question")
        await page.press("Enter", 13)
        await eventually(lambda: len(backend.prompts) == 3)
        assert await page.wait_for(LAST_ANSWER) == REPLY
        history = sessions.get(session_id).messages
        assert [m["content"] for m in history] == ["Edited question", REPLY]
        last_prompt = "".join(map(chr, backend.prompts[-1]))
        assert "Edited question" in last_prompt
        assert "Hi there" not in last_prompt

        # A failure mid-stream keeps the partial answer and shows the error.
        backend.fail_after = 5
        await send_prompt(page, "Break please")
        assert await page.wait_for(LAST_ANSWER) == REPLY[:5]
        banner = await page.wait_for(
            "!document.querySelector('#banner').hidden && "
            "document.querySelector('#banner-text').innerText"
        )
        assert "fake failure" in banner
        backend.fail_after = None

        # Esc stops an endless answer; the server keeps what was said, the page shows it.
        backend.endless, backend.step_delay = True, 0.002
        await send_prompt(page, "Go on forever")
        await page.wait_for("document.querySelector('#counter-tokens').innerText !== '0 tokens'")
        await page.press("Escape", 27)
        await page.wait_for(LAST_ANSWER)
        await eventually(lambda: len(sessions.get(session_id).messages) == 6)
        # Tokens in flight when the page stopped reading are recorded too: the page
        # re-reads the history and converges on what the server kept.
        kept = sessions.get(session_id).messages[-1]["content"]
        assert kept.startswith(REPLY[:3])
        # (rendered, a trailing newline ends the paragraph rather than showing)
        await page.wait_for(f"{LAST_ANSWER} === {json.dumps(kept.rstrip(chr(10)))}")
        backend.endless, backend.step_delay = False, 0.0

        # A request the server refuses shows its {"error": ...} and gives the text back.
        await page.evaluate(
            "(() => { const d = document.querySelector('#device');"
            " d.value = 'metal'; d.dispatchEvent(new Event('change')); })()"
        )
        await send_prompt(page, "On metal")
        banner = await page.wait_for(
            "!document.querySelector('#banner').hidden && "
            "document.querySelector('#banner-text').innerText"
        )
        assert "metal" in banner
        assert await page.evaluate("document.querySelector('#prompt').value") == "On metal"
        await page.evaluate("document.querySelector('#device').value = ''")

        # Export downloads the conversation as JSON.
        downloads = tmp_path / "downloads"
        await page.send_browser(
            "Browser.setDownloadBehavior", behavior="allow", downloadPath=str(downloads)
        )
        await page.click("#export")
        # Chromium may create the file before it has written it: wait for the whole JSON.
        await eventually(lambda: read_json_file(downloads) is not None)
        exported = read_json_file(downloads)
        assert exported["session_id"] == session_id
        assert exported["messages"] == sessions.get(session_id).messages

        # Deleting takes two clicks (no blocking dialog) and empties the list.
        for _ in range(2):
            await page.click(".session-delete")
        await eventually(lambda: sessions.ids() == [])
        await page.wait_for("document.querySelector('.sessions-empty') !== null")
        assert await page.evaluate("document.querySelectorAll('.msg').length") == 0

        # The page's own building blocks, in the same browser.
        assert await page.evaluate(SSE_CASES) == [
            {"event": "message", "data": "Hello"},
            {"event": "message", "data": "a\nb"},
            {"event": "error", "data": " two spaces"},
            {"event": "message", "data": "x"},
        ]
        rendered = await page.evaluate(HOSTILE_MARKDOWN)
        assert rendered["elements"] == 0
        assert '<img src=x onerror="window.pwned=1">' in rendered["text"]
        assert rendered["spans"] > 0  # the code was highlighted, as text
        # The refused request is logged by Chromium itself; anything else is a page bug.
        assert [e for e in page.errors if not e.startswith("Failed to load resource")] == []


@needs_chromium
async def test_page_works_with_auth_on(tmp_path: Path) -> None:
    """The page itself is public; its API calls carry the key typed into Settings."""
    app = make_app(tmp_path, auth={"enabled": True, "api_keys": ["web-key"]})
    assert CHROMIUM is not None
    async with (
        live_server(app) as base,
        chromium_page(CHROMIUM, f"{base}/", tmp_path / "chromium") as page,
    ):
        await page.wait_for("document.body?.classList.contains('ready')")
        banner = await page.evaluate("document.querySelector('#banner-text').innerText")
        assert "missing API key" in banner
        assert "Settings" in banner

        await page.click("#toggle-settings")
        await page.evaluate("document.querySelector('#api-key').focus()")
        await page.type("web-key")
        await page.press("Enter", 13)  # commits the field: "change" fires
        await page.evaluate("document.querySelector('#api-key').blur()")
        await page.wait_for("document.querySelector('#model').value === 'fake/model'")
        await page.wait_for("document.querySelector('#banner').hidden")

        await send_prompt(page, "Hi with a key")
        assert await page.wait_for(LAST_ANSWER) == REPLY
        owner = key_digest("web-key")
        assert len(app.ctx.sessions.ids(owner)) == 1
        assert await page.evaluate("localStorage.getItem('inferd.apiKey')") == "web-key"
        assert [e for e in page.errors if not e.startswith("Failed to load resource")] == []
