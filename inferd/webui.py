"""GET / (the built-in chat page) and GET /static/<path> (its scripts, styles and fonts).

The page is built from web/src into web/static (see web/build.mjs) and ships as the
`inferd.web` package data. Every file of static/ is read once, at start-up, into memory,
keyed by its path inside static/ ("app.js", "fonts/KaTeX_Main-Regular.woff2"). A request
can only ever get one of those shipped files by its exact name, so there is no
filesystem path handling to get wrong ("../", encoded slashes, symlinks).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import PurePosixPath

from sanic import Request, Sanic
from sanic.response import HTTPResponse, raw

from inferd.apidoc import COMMON_ERRORS, describe
from inferd.errors import NotFound

PAGE = "index.html"
STATIC = "static"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".woff2": "font/woff2",
}
# The page loads nothing but its own /static files and talks only to this server:
# a strict policy means a rendering bug can never run injected script. No inline
# styles either: KaTeX's formulas get theirs through the CSSOM, which CSP allows.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; font-src 'self'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def _files(folder: Traversable, prefix: str = "") -> dict[str, Traversable]:
    """Every file under `folder`, by its "/"-separated path relative to it."""
    found = {}
    for entry in folder.iterdir():
        if entry.is_dir():
            found.update(_files(entry, f"{prefix}{entry.name}/"))
        elif entry.is_file():
            found[prefix + entry.name] = entry
    return found


def load_assets() -> dict[str, Asset]:
    """Every shipped file of the built page (`inferd.web`'s static/), by its path there."""
    assets = {}
    for name, entry in _files(resources.files("inferd.web") / STATIC).items():
        content_type = CONTENT_TYPES.get(PurePosixPath(name).suffix)
        if content_type:
            body = entry.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
            assets[name] = Asset(body, content_type, etag)
    if PAGE not in assets:
        raise RuntimeError(f"the web page is missing from inferd.web/{STATIC}: rebuild web/")
    return assets


def _send(request: Request, asset: Asset) -> HTTPResponse:
    # no-cache = "revalidate every time": an upgraded server never serves a stale script,
    # and the ETag makes the revalidation a cheap 304.
    headers = {**SECURITY_HEADERS, "ETag": asset.etag, "Cache-Control": "no-cache"}
    if request.headers.get("if-none-match") == asset.etag:
        return HTTPResponse(status=304, headers=headers)
    return raw(asset.body, content_type=asset.content_type, headers=headers)


@describe("The chat page", "web page", replies={200: None, 304: None}, media=("text/html",))
async def index(request: Request) -> HTTPResponse:
    return _send(request, request.app.ctx.web_assets[PAGE])


@describe(
    "The chat page's scripts, styles and fonts",
    "web page",
    replies={200: None, 304: None},
    media=("text/javascript", "text/css", "font/woff2"),
    errors=(404, *COMMON_ERRORS),
)
async def static(request: Request, name: str) -> HTTPResponse:
    asset = request.app.ctx.web_assets.get(name)
    if asset is None or name == PAGE:  # the page itself lives at "/"
        raise NotFound(f"no static file {name!r}")
    return _send(request, asset)


def register(app: Sanic) -> None:
    app.ctx.web_assets = load_assets()
    app.add_route(index, "/", methods=["GET"], name="index", error_format="json")
    app.add_route(
        static, "/static/<name:path>", methods=["GET"], name="static", error_format="json"
    )
