"""inferd/methods.py: HEAD on every GET route, and `Allow` on every 405."""

from __future__ import annotations

import re
from collections import defaultdict

import httpx

from inferd.testing.fakes import make_app
from inferd.testing.live import live_server

# A value for each path parameter, so that every route's GET answers 200.
PARAMS = {"session_id": "s", "model_id": "fake/model", "name": "app.js"}
# Headers that differ between two answers to the same request.
VOLATILE = {"date", "etag", "x-request-id"}
# Answers whose body holds the time (uptime, a timestamp, counters): their length may
# differ between the GET and the HEAD by a digit.
CLOCKED = {"health", "readiness", "metrics"}


def _url(path: str) -> str:
    return "/" + re.sub(r"<(\w+)(:[^>]*)?>", lambda m: PARAMS[m.group(1)], path)


def _paths(app) -> dict[str, set[str]]:
    """Every route path (WebSockets aside) and the methods its routes take."""
    methods: dict[str, set[str]] = defaultdict(set)
    for route in app.router.routes:
        if not route.extra.websocket:
            methods[route.path] |= set(route.methods)
    return methods


async def test_every_get_route_answers_head_with_its_status_and_headers_and_no_body(tmp_path):
    app = make_app(tmp_path)
    gets = sorted(path for path, methods in _paths(app).items() if "GET" in methods)
    assert len(gets) == 14  # API.md's, /v1's, the page's, the docs' and /metrics
    async with live_server(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        body = {"model-name": "fake/model", "prompt": "Hi", "session-id": "s"}
        assert (await client.post("/chat/completions", json=body)).status_code == 200
        for path in gets:
            got = await client.get(_url(path))
            head = await client.head(_url(path))
            assert got.status_code == 200, path
            assert head.status_code == 200, path
            assert head.content == b"", path
            volatile = VOLATILE | ({"content-length"} if path in CLOCKED else set())
            for name in set(got.headers) - volatile:
                assert head.headers.get(name) == got.headers[name], (path, name)


async def test_head_is_refused_where_get_is_an_upgrade(tmp_path):
    app = make_app(tmp_path)
    _, response = await app.asgi_client.head("/chat/ws")
    assert response.status == 405
    assert response.headers["allow"] == "GET"


async def test_every_routes_405_lists_the_methods_it_takes(tmp_path):
    app = make_app(tmp_path)
    paths = _paths(app)
    assert "/chat/history/<session_id:str>" in {"/" + path for path in paths}
    async with live_server(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        for path, methods in paths.items():
            response = await client.put(_url(path))  # no route takes PUT
            assert response.status_code == 405, path
            allowed = {m.strip() for m in response.headers["allow"].split(",")}
            assert allowed == methods, path
