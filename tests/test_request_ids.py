"""inferd/request_ids.py: every response carries the id its access-log line has."""

from __future__ import annotations

import logging
import re
import uuid

import httpx
import pytest
from openai import AsyncOpenAI

from inferd.request_ids import well_formed
from inferd.testing.fakes import FakeBackend, make_app
from inferd.testing.live import live_server
from tests.streams import wait_for

CHAT = {"model": "fake", "messages": [{"role": "user", "content": "Hi"}]}


@pytest.fixture
def lines(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="inferd.access")
    return caplog


def _ids(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.request_id for r in caplog.records if r.name == "inferd.access"]


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("abc-123", True),
        (str(uuid.uuid4()).upper(), True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("", False),
        ("two words", False),  # would split the access log's key=value text
        ("caf\u00e9", False),
    ],
)
def test_well_formed_ids(value, ok):
    assert well_formed(value) is ok


async def test_every_response_carries_its_logged_id(tmp_path, lines):
    app = make_app(tmp_path, server={"request_max_size": 1024})
    requests = [
        ("GET", "/health", None),
        ("POST", "/v1/chat/completions", CHAT),  # JSON
        ("POST", "/v1/chat/completions", {**CHAT, "stream": True}),  # SSE
        ("POST", "/chat/completions", {"model-name": "fake", "prompt": "Hi"}),  # SSE
        ("POST", "/v1/chat/completions", {**CHAT, "n": 2}),  # 400
        ("GET", "/no/such/route", None),  # 404
        ("GET", "/v1/chat/completions", None),  # 405
        ("POST", "/completions", {"model": "fake", "prompt": "x" * 5000}),  # 413
    ]
    async with live_server(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        sent = []
        for method, path, body in requests:
            response = await client.request(method, path, json=body)
            sent.append(response.headers.get("x-request-id"))
        await wait_for(lambda: len(_ids(lines)) == len(requests))
    assert [uuid.UUID(value) for value in sent]  # generated ones are UUIDs
    assert sorted(sent) == sorted(_ids(lines)) and len(set(sent)) == len(sent)


async def test_a_well_formed_client_id_is_kept_and_echoed(tmp_path, lines):
    app = make_app(tmp_path, FakeBackend(fail_after=0))
    async with live_server(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        ok = await client.get("/health", headers={"X-Request-ID": "trace-42/a.b"})
        failed = await client.post(
            "/v1/chat/completions", json=CHAT, headers={"x-request-id": "E1"}
        )
        bad = await client.get("/health", headers={"X-Request-Id": "x" * 129})
        await wait_for(lambda: len(_ids(lines)) == 3)
    assert ok.headers["x-request-id"] == "trace-42/a.b"
    assert (failed.status_code, failed.headers["x-request-id"]) == (500, "E1")
    assert uuid.UUID(bad.headers["x-request-id"])  # replaced, not echoed
    assert _ids(lines) == ["trace-42/a.b", "E1", bad.headers["x-request-id"]]


async def test_the_openai_client_exposes_it(tmp_path):
    async with live_server(make_app(tmp_path)) as url:
        client = AsyncOpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
        async with client:
            reply = await client.chat.completions.create(
                model="fake", messages=CHAT["messages"], extra_headers={"X-Request-Id": "mine"}
            )
    assert reply._request_id == "mine"


async def test_a_plugin_that_sets_the_header_keeps_its_value(tmp_path):
    plugin = "examples.request_id_plugin:RequestIdPlugin"
    app = make_app(tmp_path, plugins={"enabled": [plugin]})
    _, response = await app.asgi_client.get("/models")
    [value] = response.headers.get_list("x-request-id")
    assert re.fullmatch(r"[0-9a-f]{32}", value)  # the plugin's, not a UUID with dashes
