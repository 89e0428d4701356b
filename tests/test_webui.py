"""inferd/webui.py: GET / and the built page's /static files (the page itself runs in
Chromium in tests/test_web_*.py)."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import pytest

from inferd.testing.fakes import make_app
from inferd.webui import CONTENT_TYPES, PAGE, STATIC, load_assets

WEB = resources.files("inferd.web") / STATIC
ASSETS = sorted(name for name in load_assets() if name != PAGE)


async def test_index_serves_the_page(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    _, response = await app.asgi_client.get("/")
    assert response.status == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert '<script type="module" src="/static/app.js">' in response.text
    # A strict policy: only this server's own scripts and styles, nothing inline.
    policy = response.headers["content-security-policy"]
    assert "script-src 'self';" in policy
    assert "style-src 'self';" in policy
    assert "unsafe" not in policy
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("name", ASSETS)
async def test_static_assets_are_served_with_their_type(tmp_path: Path, name: str) -> None:
    app = make_app(tmp_path)
    _, response = await app.asgi_client.get(f"/static/{name}")
    assert response.status == 200
    assert response.headers["content-type"] == CONTENT_TYPES[Path(name).suffix]
    assert response.body == WEB.joinpath(name).read_bytes()


def test_the_built_page_is_shipped_whole() -> None:
    """The page, its bundle, its stylesheet and every font the stylesheet names."""
    page = WEB.joinpath(PAGE).read_text(encoding="utf-8")
    wanted = set(re.findall(r'"/static/([^"]+)"', page))
    assert wanted == {"theme.js", "style.css", "app.js"}
    css = WEB.joinpath("style.css").read_text(encoding="utf-8")
    fonts = set(re.findall(r'url\("?\./([^")]+)"?\)', css))
    assert fonts  # KaTeX's, self-hosted
    assert all(font.startswith("fonts/") and font.endswith(".woff2") for font in fonts)
    assert wanted | fonts <= set(ASSETS)
    # The bundle imports nothing at run time: everything is inside app.js.
    assert not re.search(r'from\s*"\./|import\("\./', WEB.joinpath("app.js").read_text("utf-8"))


def test_the_page_loads_nothing_inline() -> None:
    """The CSP forbids inline script and style: the page must not need them."""
    page = WEB.joinpath(PAGE).read_text(encoding="utf-8")
    assert not re.search(r"<script(?![^>]*\bsrc=)", page)
    assert "<style" not in page
    assert not re.search(r"\sstyle=", page)
    assert not re.search(r"\son[a-z]+=", page)


async def test_fonts_are_served_from_their_folder(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    name = next(name for name in ASSETS if name.startswith("fonts/"))
    _, response = await app.asgi_client.get(f"/static/{name}")
    assert response.status == 200
    assert response.headers["content-type"] == "font/woff2"
    _, response = await app.asgi_client.get("/")
    assert "font-src 'self'" in response.headers["content-security-policy"]


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
        "/static/fonts/%2e%2e/app.js",
        "/static/fonts",
        "/static/fonts/",
        "/static/static/app.js",
        "/static/fonts%2fKaTeX_Main-Regular.woff2",
    ],
)
async def test_unknown_or_traversing_static_names_are_404(tmp_path: Path, path: str) -> None:
    app = make_app(tmp_path)
    _, response = await app.asgi_client.get(path)
    assert response.status == 404
    assert isinstance(response.json["error"], str)
