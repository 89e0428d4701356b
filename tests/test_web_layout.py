"""The chat page's layout in Chromium (web/src/styles/): on a phone every control is
reachable by touch and nothing overflows sideways; on a desktop the light and dark themes.

Set INFERD_SCREENSHOTS=<folder> to keep screenshots of each layout (desktop and phone,
dark and light) for a person to look at.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from inferd.testing.fakes import FakeBackend, make_app
from inferd.testing.live import live_server
from tests.browser import WebPage, open_page
from tests.streams import wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")

STEP = 0.002  # seconds per fake token
RICH_REPLY = """Here is a **merge** of two sorted lists, in $O(n + m)$ time:

```python
def merge(a, b):
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        if a[i] <= b[j]:
            out.append(a[i]); i += 1
        else:
            out.append(b[j]); j += 1
    return out + a[i:] + b[j:]
```

| input | output |
|:--|:--|
| `[1, 4]`, `[2, 3]` | `[1, 2, 3, 4]` |

Each step moves one index: at most $n + m$ steps.

$$T(n, m) = \\sum_{k=1}^{n+m} O(1) = O(n + m)$$

More: https://docs.python.org
"""


async def screenshot(web: WebPage, name: str) -> None:
    folder = os.environ.get("INFERD_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        await web.page.screenshot(path=str(Path(folder) / f"{name}.png"))


async def tap(web: WebPage, selector: str) -> None:
    """Tap an element, after checking a finger can: on screen, visible, big enough."""
    element = web.page.locator(selector).first
    await element.wait_for(state="visible")
    await element.scroll_into_view_if_needed()  # panels scroll: reachable after a swipe
    box = await element.bounding_box()
    viewport = web.page.viewport_size
    assert box is not None, selector
    assert box["x"] >= 0 and box["y"] >= 0, selector
    assert box["x"] + box["width"] <= viewport["width"] + 1, selector
    assert box["y"] + box["height"] <= viewport["height"] + 1, selector
    assert min(box["width"], box["height"]) >= 24, (selector, box)
    await element.tap()


async def no_sideways_overflow(web: WebPage) -> bool:
    return await web.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")


async def test_every_control_is_reachable_by_touch_on_a_phone(browser, tmp_path):
    backend = FakeBackend(reply=RICH_REPLY, context_length=4096, step_delay=STEP)
    app = make_app(tmp_path, backend)
    async with live_server(app) as base, open_page(browser, f"{base}/", phone=True) as web:
        page, sessions = web.page, app.ctx.sessions.store
        await web.ready()
        assert await web.evaluate("() => matchMedia('(hover: none)').matches")
        # The status is in the top bar (the sidebar is folded away).
        await page.wait_for_selector("#status-pill[data-state='ready']")
        assert await page.is_visible("#status-pill")
        assert not await page.is_visible("#sidebar")
        assert await no_sideways_overflow(web)

        await page.fill("#prompt", "Merge two sorted lists")
        await tap(web, "#send")
        await web.answer()
        assert await no_sideways_overflow(web)  # code and tables scroll inside themselves
        await screenshot(web, "phone-dark-chat")

        # Message actions show without hover; regenerate, switch versions, edit.
        await tap(web, ".msg.assistant:last-child button:has-text('Copy')")
        await tap(web, ".msg.assistant:last-child button:has-text('Regenerate')")
        await page.wait_for_selector(".switcher-count:has-text('2/2')")
        await web.answer()
        await tap(web, ".switcher button[title='Previous version']")
        await page.wait_for_selector(".switcher-count:has-text('1/2')")
        await tap(web, ".msg.user button:has-text('Edit')")
        await page.fill(".msg.edit textarea", "Merge three sorted lists")
        await tap(web, ".msg.edit button:has-text('Send')")
        await page.wait_for_selector(".switcher-count:has-text('3/3')")
        await web.answer()

        # Stop an endless answer with the send button turned stop button.
        backend.endless, backend.step_delay = True, 0.005
        await page.fill("#prompt", "Go on")
        await tap(web, "#send")
        await page.wait_for_selector("#send.stop")
        await tap(web, "#send")
        await web.answer()
        backend.endless, backend.step_delay = False, STEP

        # The sidebar: open, rename, search, new chat, delete, import, close.
        await tap(web, "#menu")
        await page.wait_for_selector("#sidebar", state="visible")
        await page.wait_for_timeout(300)  # the slide-in transition
        await screenshot(web, "phone-dark-sidebar")
        await tap(web, ".session-rename")
        await page.fill(".rename-input", "Merging")
        await tap(web, ".session.renaming button[title='Save title']")
        await page.wait_for_selector(".session-title:has-text('Merging')")
        await tap(web, "#search")
        await page.fill("#search", "merg")
        assert await page.locator(".session").count() == 1
        await page.fill("#search", "")
        async with page.expect_file_chooser():
            await tap(web, "#import")
        await tap(web, "#close-sidebar")
        await page.wait_for_selector("#sidebar", state="hidden")

        # Settings: open, change a slider, close by tapping beside the panel.
        await tap(web, "#toggle-settings")
        await page.wait_for_selector("#settings", state="visible")
        await tap(web, "label.check:has(#key-remember)")
        assert await page.is_checked("#key-remember")
        await page.locator("#set-temperature").tap()
        await tap(web, "#close-settings")
        await page.wait_for_selector("#settings", state="hidden")
        await tap(web, "#toggle-settings")
        await page.mouse.click(10, 400)  # the scrim, beside the panel
        await page.wait_for_selector("#settings", state="hidden")

        # Export (a popover menu), the theme, the model and device pickers.
        await tap(web, "#export")
        async with page.expect_download() as download:
            await tap(web, "[data-export='chat-md']")
        assert (await download.value).suggested_filename.endswith(".md")
        await tap(web, "#theme")
        assert await page.get_attribute("html", "data-theme") == "light"
        await web.answer()
        await screenshot(web, "phone-light-chat")
        await tap(web, "#model")
        await tap(web, "#device")

        # Delete the conversation (two taps), then New chat.
        await tap(web, "#menu")
        await page.wait_for_selector("#sidebar", state="visible")
        await tap(web, ".session-delete")
        await tap(web, ".session-delete.armed")
        await wait_for(lambda: sessions.ids() == [])
        await tap(web, "#new-chat")
        await page.wait_for_selector("#sidebar", state="hidden")
        assert await page.is_visible("#empty")
        assert await no_sideways_overflow(web)
        assert web.unexpected_errors() == []


async def test_desktop_layout_in_both_themes(browser, tmp_path):
    app = make_app(tmp_path, FakeBackend(reply=RICH_REPLY, context_length=4096, step_delay=STEP))
    async with live_server(app) as base, open_page(browser, f"{base}/") as web:
        page = web.page
        await web.ready()
        await screenshot(web, "desktop-dark-empty")
        await web.send("Merge two sorted lists")
        await web.answer()
        await page.click("#new-chat")
        await web.send("Explain attention in one line")
        await web.answer()
        await page.click(".session:nth-child(2) .session-open")
        await page.wait_for_selector(".katex-display")
        # The sidebar and status are always in view; phone-only controls are not.
        for selector in ("#sidebar", "#status", "#search", "#new-chat"):
            assert await page.is_visible(selector), selector
        for selector in ("#menu", "#status-pill", "#close-sidebar"):
            assert not await page.is_visible(selector), selector
        await screenshot(web, "desktop-dark-chat")
        await page.click("#toggle-settings")
        await page.click("#theme")
        await screenshot(web, "desktop-light-settings")
        colours = await web.evaluate(
            """() => [document.body, document.querySelector('.code')].map(
              (node) => getComputedStyle(node).backgroundColor)"""
        )
        assert colours == ["rgb(247, 247, 251)", "rgb(246, 248, 250)"]  # theme.css, light
        assert await no_sideways_overflow(web)
        assert web.unexpected_errors() == []
