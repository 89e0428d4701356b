"""The chat page in Chromium, against the fake backend: streaming, the token counter,
branches (regenerate, edit, the version switcher), stopping and failures, settings,
the sidebar (titles, rename, search, order, delete), export/import, copy, theme, status.

Page modules: web/src/chat.js, turn.js, stats.js, branches.js, sessions.js, transfer.js,
settings.js, status.js, theme.js (bundled into web/static/app.js).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from inferd.app import create_app
from inferd.config import parse_config
from inferd.testing.fakes import REPLY, FakeBackend, make_app
from inferd.testing.live import live_server
from tests.browser import LAST_ANSWER, WebPage, download_text, js, open_page
from tests.streams import wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")

STEP = 0.01  # seconds per fake token: streaming is visible, and the rate is bounded


@asynccontextmanager
async def chat_page(
    browser: Any, tmp_path: Path, backend: FakeBackend | None = None, **options: Any
) -> AsyncIterator[tuple[Any, WebPage, str]]:
    app = make_app(tmp_path, backend or FakeBackend(step_delay=STEP))
    async with live_server(app) as base, open_page(browser, f"{base}/", **options) as web:
        await web.ready()
        yield app, web, base


async def session_id(web: WebPage) -> str:
    return await web.evaluate("() => decodeURIComponent(location.hash.slice(1))")


async def switcher(web: WebPage) -> str | None:
    return await web.evaluate(
        "() => document.querySelector('.msg.user .switcher-count')?.innerText ?? null"
    )


async def test_an_answer_streams_in_and_the_counter_shows_the_servers_token_count(
    browser, tmp_path
):
    async with chat_page(browser, tmp_path) as (app, web, _):
        page = web.page
        assert await page.get_attribute("html", "data-theme") == "dark"  # the default
        assert await page.input_value("#model") == "fake/model"
        await page.wait_for_selector("#status[data-state='ready']")
        assert await page.inner_text("#status .status-text") == "Connected"

        await web.send("Hi there")
        await page.wait_for_selector("body.streaming")  # it arrives token by token
        assert await web.answer() == REPLY
        # Exact: the server's count from the stream's closing usage comment, no "~".
        assert await page.inner_text("#counter-tokens") == f"{len(REPLY)} tokens"
        rate = await page.inner_text("#counter-rate")
        # Timed on the server: each fake token takes STEP seconds, so never above 1/STEP.
        assert 0 < float(rate.removesuffix(" tok/s")) <= 1 / STEP
        meta = await page.inner_text(".msg.assistant .msg-meta")
        assert meta.startswith(f"{len(REPLY)} tokens · ")
        assert "first token" in meta

        [sid] = app.ctx.sessions.store.ids()
        assert await session_id(web) == sid
        entry = page.locator(".session").first
        assert await entry.locator(".session-title").inner_text() == "Hi there"
        assert await entry.locator(".session-meta").inner_text() == "2 messages · just now"
        assert await page.title() == "Hi there · inferd"
        assert web.unexpected_errors() == []


async def test_regenerate_and_edit_fork_and_the_switcher_moves_between_versions(browser, tmp_path):
    async with chat_page(browser, tmp_path) as (app, web, _):
        page, sessions = web.page, app.ctx.sessions.store
        await web.send("First question")
        await web.answer()
        original = await session_id(web)
        assert await switcher(web) is None  # one version only

        # Regenerate: a fork keeping what came before the question, asked again.
        await page.click(".msg.assistant:last-child button:has-text('Regenerate')")
        await page.wait_for_function("() => document.querySelector('.switcher-count')")
        await web.answer()
        regenerated = await session_id(web)
        assert regenerated != original
        assert await switcher(web) == "2/2"
        assert sessions.get(regenerated).parent == original
        assert sessions.get(regenerated).fork_point == 0
        assert [m["content"] for m in sessions.get(original).messages] == ["First question", REPLY]
        # The sidebar shows one conversation with its branches.
        assert await page.locator(".session").count() == 1
        assert "2 branches" in await page.inner_text(".session-meta")

        # Previous goes back to the first version, Next forward again.
        await page.click(".switcher button[title='Previous version']")
        await page.wait_for_function(f"() => location.hash === '#{original}'")
        assert await switcher(web) == "1/2"
        await page.click(".switcher button[title='Next version']")
        await page.wait_for_function(f"() => location.hash === '#{regenerated}'")

        # Edit the question: a third version, with the new text; the others stay.
        await page.click(".msg.user button:has-text('Edit')")
        await page.fill(".msg.edit textarea", "Edited question")
        await page.press(".msg.edit textarea", "Enter")
        await page.wait_for_function(
            "() => document.querySelector('.switcher-count')?.innerText === '3/3'"
        )
        assert await web.answer() == REPLY
        edited = await session_id(web)
        assert [m["content"] for m in sessions.get(edited).messages] == ["Edited question", REPLY]
        last_prompt = "".join(map(chr, app.ctx.fake_backend.prompts[-1]))
        assert "Edited question" in last_prompt and "First question" not in last_prompt
        assert len(sessions.ids()) == 3
        assert sessions.get(original).messages[0]["content"] == "First question"

        # A second turn in the edited branch has one version; the first turn still three.
        await web.send("Follow-up")
        await web.answer()
        counts = await page.locator(".switcher-count").all_inner_texts()
        assert counts == ["3/3"]
        assert web.unexpected_errors() == []


async def test_stopping_failing_and_refused_requests(browser, tmp_path):
    backend = FakeBackend(step_delay=STEP)
    async with chat_page(browser, tmp_path, backend) as (app, web, _):
        page, sessions = web.page, app.ctx.sessions.store

        # Esc stops an endless answer; the page converges on what the server kept.
        backend.endless = True
        await web.send("Go on forever")
        await page.wait_for_function(
            "() => !/^~?0 tokens$/.test(document.querySelector('#counter-tokens').innerText)"
        )
        await page.keyboard.press("Escape")
        await web.answer()
        [sid] = sessions.ids()
        await wait_for(lambda: len(sessions.get(sid).messages) == 2, timeout=5)
        kept = sessions.get(sid).messages[-1]["content"]
        # what was generated before the stop (the counter showed a token or more)
        assert kept and (REPLY * 100).startswith(kept)
        # Rendered markdown drops trailing whitespace (a stop can land right after a space).
        await page.wait_for_function(f"() => ({LAST_ANSWER})() === {js(kept.rstrip())}")
        backend.endless = False

        # A failure mid-stream keeps the partial answer and says what went wrong.
        backend.fail_after = 5
        await web.send("Break please")
        assert await web.answer() == REPLY[:5]
        assert "fake failure" in await web.banner()
        backend.fail_after = None

        # A request the server refuses shows its error and gives the text back.
        await page.select_option("#device", "metal")
        await web.send("On metal")
        assert "metal" in await web.banner()
        assert await page.input_value("#prompt") == "On metal"
        # Refused in a branch: the fork made for it is dropped, the original stays open.
        await page.fill("#prompt", "")
        await page.click(".msg.user >> nth=0 >> button:has-text('Edit')")
        await page.fill(".msg.edit textarea", "Edited on metal")
        await page.press(".msg.edit textarea", "Enter")
        await page.wait_for_function("() => document.querySelector('#prompt').value")
        assert sessions.ids() == [sid]
        assert await session_id(web) == sid
        assert await page.locator(".msg").count() == 4


async def test_the_settings_panel_fills_the_chat_request(browser, tmp_path):
    async with chat_page(browser, tmp_path) as (_, web, _base):
        page = web.page
        await page.click("#toggle-settings")
        await page.wait_for_selector("#settings", state="visible")
        sliders = {
            "temperature": 1.25,
            "top-p": 0.5,
            "top-k": 7,
            "max-token": 256,
            "repeat-penalty": 1.5,
        }
        for field, value in sliders.items():
            await page.eval_on_selector(
                f"#set-{field}",
                "(input, value) => { input.value = value;"
                " input.dispatchEvent(new Event('input', {bubbles: true})); }",
                value,
            )
        limits = await page.eval_on_selector("#set-max-token", "i => [i.min, i.max]")
        assert limits == ["128", "2048"]
        await page.fill("#system-prompt", "Answer in French.")
        await page.fill("#stop", "###\n\\n\\n")
        async with page.expect_request("**/chat/completions") as request:
            await web.send("Bonjour")
        body = (await request.value).post_data_json
        assert {field: body[field] for field in sliders} == sliders
        assert body["system-prompt"] == "Answer in French."
        assert body["stop"] == ["###", "\n\n"]
        await web.answer()
        assert (await page.inner_text(".system-note")).endswith("Answer in French.")

        # Settings survive a reload; Reset restores the defaults.
        await page.reload()
        await web.ready()
        assert await page.input_value("#set-top-k") == "7"
        assert await page.input_value("#system-prompt") == "Answer in French."
        await page.click("#toggle-settings")
        await page.click("#reset-settings")
        assert await page.input_value("#set-temperature") == "0.7"


async def test_the_sidebar_titles_renames_searches_orders_and_deletes(browser, tmp_path):
    async with chat_page(browser, tmp_path) as (app, web, base):
        page, sessions = web.page, app.ctx.sessions.store
        async with httpx.AsyncClient(base_url=base) as client:
            for sid, prompt in (("a", "Alpha question"), ("b", "Beta question"), ("c", "Gamma")):
                body = {"model-name": "fake", "prompt": prompt, "session-id": sid}
                await client.post("/chat/completions", json=body)
        await page.reload()
        await web.ready()
        titles = page.locator(".session-title")
        assert await titles.all_inner_texts() == ["Gamma", "Beta question", "Alpha question"]

        # Using a chat moves it to the top.
        await page.click(".session[data-session-id='a'] .session-open")
        await page.wait_for_function("() => location.hash === '#a'")
        assert await page.locator(".msg").count() == 2
        await web.send("More")
        await web.answer()
        await page.wait_for_function(
            "() => document.querySelector('.session-title').innerText === 'Alpha question'"
        )

        # Search filters by title.
        await page.fill("#search", "bet")
        assert await titles.all_inner_texts() == ["Beta question"]
        await page.fill("#search", "zzz")
        assert await page.inner_text(".sessions-empty") == "No chats match"
        await page.fill("#search", "")

        # Rename: stored on the server, so every browser sees it.
        await page.hover(".session[data-session-id='b']")  # the row's buttons show on hover
        await page.click(".session[data-session-id='b'] .session-rename")
        await page.fill(".rename-input", "Renamed chat")
        await page.press(".rename-input", "Enter")
        await page.wait_for_selector(".session-title:has-text('Renamed chat')")
        assert sessions.get("b").title == "Renamed chat"

        # Delete takes two clicks (no blocking dialog).
        delete = ".session[data-session-id='c'] .session-delete"
        await page.hover(".session[data-session-id='c']")
        await page.click(delete)
        assert await page.get_attribute(delete, "title") == "Click again to delete"
        await page.click(delete)
        await wait_for(lambda: "c" not in sessions.ids())
        await page.wait_for_selector(".session[data-session-id='c']", state="detached")

        # The open chat survives a reload (its id is in the URL); New chat empties the view.
        await page.reload()
        await web.ready()
        assert await page.locator(".msg").count() == 4
        await page.click("#new-chat")
        assert await page.locator(".msg").count() == 0
        assert await page.is_visible("#empty")
        assert web.unexpected_errors() == []


async def test_export_as_markdown_and_json_and_import_again(browser, tmp_path):
    async with chat_page(browser, tmp_path) as (app, web, _):
        page, sessions = web.page, app.ctx.sessions.store
        for prompt in ("First chat", "Second chat"):
            await page.click("#new-chat")
            await web.send(prompt)
            await web.answer()
        current = await session_id(web)

        await page.click("#export")
        name, markdown = await download_text(web, "[data-export='chat-md']")
        assert name.endswith(".md")
        assert markdown.startswith("# Second chat\n")
        assert f"## User\n\nSecond chat\n\n## Assistant\n\n{REPLY}" in markdown

        await page.click("#export")
        _, text = await download_text(web, "[data-export='chat-json']")
        exported = json.loads(text)
        assert exported["format"] == "inferd-chats"
        [chat] = exported["chats"]
        assert chat["id"] == current
        assert chat["messages"] == sessions.get(current).messages

        await page.click("#export")
        _, markdown = await download_text(web, "[data-export='all-md']")
        assert "# First chat" in markdown and "# Second chat" in markdown
        await page.click("#export")
        _, everything = await download_text(web, "[data-export='all-json']")
        assert [c["title"] for c in json.loads(everything)["chats"]] == [
            "First chat",
            "Second chat",
        ]

        # Import: new sessions with the same messages and titles, opened in the page.
        for sid in sessions.ids():
            sessions.delete(sid)
        export = tmp_path / "export.json"
        export.write_text(everything)
        await page.set_input_files("#import-file", str(export))
        assert await web.banner() == "Imported 2 chats."
        await wait_for(lambda: len(sessions.ids()) == 2)
        imported = [sessions.get(sid) for sid in sessions.ids()]
        assert sorted(s.title for s in imported) == ["First chat", "Second chat"]
        assert all(s.messages[1]["content"] == REPLY for s in imported)
        await page.wait_for_function("() => document.querySelectorAll('.msg').length === 2")

        broken = tmp_path / "broken.json"
        broken.write_text("{not json")
        await page.set_input_files("#import-file", str(broken))
        await page.wait_for_selector("#banner[data-tone='error']")
        assert await page.inner_text("#banner-text") == "this file is not JSON"


async def test_copying_code_and_switching_to_the_light_theme(browser, tmp_path):
    code = "def add(a, b):\n    return a + b"
    backend = FakeBackend(reply=f"Here:\n\n```python\n{code}\n```\n")
    permissions = ["clipboard-read", "clipboard-write"]
    async with chat_page(browser, tmp_path, backend, permissions=permissions) as (_, web, _b):
        page = web.page
        await web.send("Code please")
        await web.answer()
        assert await page.inner_text(".code-lang") == "python"
        assert await page.locator(".code .hljs-keyword").count() >= 2  # def, return
        await page.click(".copy-code")
        await page.wait_for_selector(".copy-code:has-text('Copied')")
        assert await web.evaluate("() => navigator.clipboard.readText()") == code + "\n"
        await page.click(".msg.assistant button[title='Copy to clipboard']")
        copied = await web.evaluate("() => navigator.clipboard.readText()")
        assert copied.startswith("Here:\n\n```python")

        dark = await web.evaluate("() => getComputedStyle(document.body).backgroundColor")
        await page.click("#theme")
        assert await page.get_attribute("html", "data-theme") == "light"
        light = await web.evaluate("() => getComputedStyle(document.body).backgroundColor")
        assert light != dark
        await page.reload()
        await web.ready()
        assert await page.get_attribute("html", "data-theme") == "light"  # remembered
        assert await page.get_attribute("#theme", "title") == "Dark theme"


async def test_the_status_says_disconnected_when_the_server_is_unreachable(browser, tmp_path):
    async with chat_page(browser, tmp_path) as (_, web, _b):
        page = web.page
        await page.wait_for_selector("#status[data-state='ready']")
        await page.route("**/readiness", lambda route: route.abort())
        await web.evaluate("() => window.dispatchEvent(new Event('online'))")
        await page.wait_for_selector("#status[data-state='offline']")
        assert await page.inner_text("#status .status-text") == "Disconnected"
        await page.unroute("**/readiness")
        await web.evaluate("() => window.dispatchEvent(new Event('online'))")
        await page.wait_for_selector("#status[data-state='ready']")


@pytest.mark.real_model
async def test_a_real_model_answers_in_the_page(
    browser, tmp_path, stories_path, single_torch_thread
):
    config = parse_config(
        {
            "sessions": {"path": str(tmp_path / "sessions")},
            "models": [{"id": "stories", "name": "stories260K", "path": str(stories_path)}],
        }
    )
    app = create_app(config)
    async with live_server(app) as base, open_page(browser, f"{base}/") as web:
        await web.ready()
        await web.page.click("#toggle-settings")
        await web.page.eval_on_selector(
            "#set-temperature",
            "i => { i.value = 0; i.dispatchEvent(new Event('input', {bubbles: true})); }",
        )
        await web.page.fill("#stop", ".")  # one sentence is enough
        await web.send("Once upon a time")
        answer = await web.answer(timeout=60_000)
        assert answer.strip()
        [sid] = app.ctx.sessions.store.ids()
        stored = app.ctx.sessions.store.get(sid).messages[-1]["content"]
        assert stored.strip().split()[:3] == answer.split()[:3]
        tokens = await web.page.inner_text("#counter-tokens")
        assert tokens.endswith(" tokens") and not tokens.startswith("~")
        assert web.unexpected_errors() == []
