"""GET /: the built-in web chat page, served from the installed package's data."""

from __future__ import annotations

from importlib import resources

from sanic import Request, Sanic
from sanic.response import HTTPResponse, html


def _page() -> str:
    return resources.files("inferd.web").joinpath("index.html").read_text(encoding="utf-8")


async def index(request: Request) -> HTTPResponse:
    return html(request.app.ctx.web_page)


def register(app: Sanic) -> None:
    app.ctx.web_page = _page()
    app.add_route(index, "/", methods=["GET"], name="index")
