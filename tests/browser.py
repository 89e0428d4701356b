"""Headless Chromium for the web page's tests, driven by Playwright.

Debian's `chromium` is launched directly (`executable_path`), so Playwright never
downloads a browser. Each test module gets one browser (the module-scoped `browser`
fixture, registered from conftest.py); each test opens its own context (fresh storage)
and page with `open_page`. Without Chromium the tests skip, saying why -- unless
INFERD_REQUIRE_BROWSER=1 (set by .ci/run), when they fail instead.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
# What the page shows once an answer has finished streaming, else null.
LAST_ANSWER = """() => {
  const done = document.querySelector('.msg.assistant:last-child:not(.streaming) .msg-content');
  return !document.body.classList.contains('streaming') && done ? done.innerText : null;
}"""


def find_chromium() -> str | None:
    """$INFERD_CHROMIUM, else Debian's /usr/bin/chromium, else a chromium/chrome on PATH."""
    candidates = [os.environ.get("INFERD_CHROMIUM"), "/usr/bin/chromium"]
    candidates += [shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    """One headless Chromium for the whole test module."""
    chromium = find_chromium()
    if chromium is None:
        reason = "no Chromium found (apt-get install chromium, or set INFERD_CHROMIUM)"
        if os.environ.get("INFERD_REQUIRE_BROWSER") == "1":
            pytest.fail(f"INFERD_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium)
        yield launched
        await launched.close()


@dataclass
class WebPage:
    """A page of the chat app, with the errors its console reported."""

    page: Page
    errors: list[str] = field(default_factory=list)

    def note(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def unexpected_errors(self) -> list[str]:
        """Console errors other than the failed requests a test provoked on purpose
        (Chromium logs each 4xx/5xx itself). A CSP violation would show up here."""
        return [e for e in self.errors if not e.startswith("Failed to load resource")]

    async def ready(self) -> None:
        await self.page.wait_for_selector("body.ready")

    async def send(self, text: str) -> None:
        await self.page.fill("#prompt", text)
        await self.page.press("#prompt", "Enter")

    async def answer(self, timeout: float = 10_000) -> str:
        """The last answer's text once it has finished streaming."""
        handle = await self.page.wait_for_function(LAST_ANSWER, timeout=timeout)
        return await handle.json_value()

    async def banner(self) -> str:
        await self.page.wait_for_selector("#banner:not([hidden])")
        return await self.page.inner_text("#banner-text")

    async def evaluate(self, expression: str, arg: Any = None) -> Any:
        return await self.page.evaluate(expression, arg)


@asynccontextmanager
async def open_page(
    browser: Browser, url: str, *, phone: bool = False, **options: Any
) -> AsyncIterator[WebPage]:
    """A fresh context (storage, permissions) with one page at `url`, closed on exit."""
    settings: dict[str, Any] = {"viewport": PHONE if phone else DESKTOP, "accept_downloads": True}
    if phone:
        settings.update(is_mobile=True, has_touch=True, device_scale_factor=2)
    context = await browser.new_context(**settings, **options)
    try:
        page = await context.new_page()
        web = WebPage(page)
        page.on("console", web.note)
        page.on("pageerror", lambda error: web.errors.append(f"uncaught: {error}"))
        await page.goto(url)
        yield web
    finally:
        await context.close()


async def download_text(web: WebPage, selector: str) -> tuple[str, str]:
    """Click `selector`, which downloads a file: its suggested name and its text."""
    async with web.page.expect_download() as info:
        await web.page.click(selector)
    download = await info.value
    path = await download.path()
    return download.suggested_filename, path.read_text(encoding="utf-8")


def js(value: Any) -> str:
    """A Python value as a JavaScript literal."""
    return json.dumps(value)
