"""Headless Chromium driven over the Chrome DevTools Protocol (CDP), for the web page test.

No Selenium or Playwright: Chromium starts with `--remote-debugging-port=0`, prints
"DevTools listening on ws://..." on stderr, and commands go over that WebSocket with the
`websockets` package. One page (a flattened CDP session) is enough for these tests.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import websockets

FLAGS = (
    "--headless",
    "--no-sandbox",  # CI containers run as root, where the sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-port=0",
)
LISTENING = re.compile(r"DevTools listening on (ws://\S+)")


def find_chromium() -> str | None:
    """$INFERD_CHROMIUM, else Debian's /usr/bin/chromium, else a chromium/chrome on PATH."""
    candidates = [os.environ.get("INFERD_CHROMIUM"), "/usr/bin/chromium"]
    candidates += [shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


class CdpError(RuntimeError):
    pass


class Page:
    """One browser tab: send CDP commands, evaluate JavaScript, type, screenshot."""

    def __init__(self, socket: Any, session_id: str, ids: itertools.count) -> None:
        self.socket = socket
        self.session_id = session_id
        self.ids = ids
        self.errors: list[str] = []  # uncaught exceptions and console errors

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        return await command(self.socket, self.ids, method, params, self.session_id, self.errors)

    async def send_browser(self, method: str, **params: Any) -> dict[str, Any]:
        """A command for the browser itself, e.g. Browser.setDownloadBehavior."""
        return await command(self.socket, self.ids, method, params, None, self.errors)

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (promises awaited)."""
        reply = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in reply:
            details = reply["exceptionDetails"]
            raise CdpError(details.get("exception", {}).get("description") or details["text"])
        return reply["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 5.0) -> Any:
        """Poll until `expression` is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout}s waiting for: {expression}")
            await asyncio.sleep(0.05)

    async def type(self, text: str) -> None:
        """Type into the focused element, as an IME commit would (fires `input`)."""
        await self.send("Input.insertText", text=text)

    async def press(self, key: str, code: int) -> None:
        for kind in ("keyDown", "keyUp"):
            await self.send(
                "Input.dispatchKeyEvent", type=kind, key=key, code=key, windowsVirtualKeyCode=code
            )

    async def click(self, selector: str) -> None:
        await self.evaluate(f"document.querySelector({json.dumps(selector)}).click()")

    async def screenshot(self, path: Path | str) -> None:
        reply = await self.send("Page.captureScreenshot", format="png")
        Path(path).write_bytes(base64.b64decode(reply["data"]))


async def command(
    socket: Any,
    ids: itertools.count,
    method: str,
    params: dict[str, Any],
    session_id: str | None = None,
    errors: list[str] | None = None,
) -> dict[str, Any]:
    """Send one CDP command and wait for its reply, noting error events seen meanwhile."""
    message: dict[str, Any] = {"id": next(ids), "method": method, "params": params}
    if session_id:
        message["sessionId"] = session_id
    await socket.send(json.dumps(message))
    while True:
        reply = json.loads(await socket.recv())
        if reply.get("id") == message["id"]:
            if "error" in reply:
                raise CdpError(f"{method}: {reply['error'].get('message')}")
            return reply["result"]
        if errors is not None:
            note_error(reply, errors)


def note_error(event: dict[str, Any], errors: list[str]) -> None:
    params = event.get("params", {})
    if event.get("method") == "Runtime.exceptionThrown":
        details = params["exceptionDetails"]
        errors.append(details.get("exception", {}).get("description") or details["text"])
    elif event.get("method") == "Log.entryAdded" and params["entry"]["level"] == "error":
        errors.append(params["entry"]["text"])


async def devtools_url(log: Path, process: asyncio.subprocess.Process, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = LISTENING.search(log.read_text(errors="replace"))
        if match:
            return match.group(1)
        if process.returncode is not None:
            break
        await asyncio.sleep(0.05)
    raise RuntimeError(f"chromium did not start; its stderr:\n{log.read_text(errors='replace')}")


@contextlib.asynccontextmanager
async def chromium_page(
    binary: str, url: str, workdir: Path, width: int = 1280, height: int = 800
) -> AsyncIterator[Page]:
    """A headless Chromium with one page open at `url`; the browser is closed on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "chromium.log"
    # stderr goes to a file, not a pipe: nobody drains a pipe once the port is read.
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            binary,
            *FLAGS,
            f"--user-data-dir={workdir / 'profile'}",
            "about:blank",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,  # its own process group: renderers go down with it
        )
    closing = False
    try:
        endpoint = await devtools_url(log, process, timeout=15)
        async with websockets.connect(endpoint, max_size=None) as socket:
            ids = itertools.count(1)
            target = await command(socket, ids, "Target.createTarget", {"url": "about:blank"})
            attached = await command(
                socket,
                ids,
                "Target.attachToTarget",
                {"targetId": target["targetId"], "flatten": True},
            )
            page = Page(socket, attached["sessionId"], ids)
            for domain in ("Runtime.enable", "Log.enable", "Page.enable"):
                await page.send(domain)
            await page.send(
                "Emulation.setDeviceMetricsOverride",
                width=width,
                height=height,
                deviceScaleFactor=1,
                mobile=False,
            )
            await page.send("Page.navigate", url=url)
            yield page
            with contextlib.suppress(Exception):
                closing = True
                await command(socket, ids, "Browser.close", {})
    finally:
        await stop(process, grace=5 if closing else 0)


async def stop(process: asyncio.subprocess.Process, grace: float) -> None:
    """Wait up to `grace` seconds for Chromium to exit, then kill its process group."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(process.wait(), timeout=grace or 0.001)
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
