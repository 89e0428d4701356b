"""examples/request_id_plugin.py: the guide's example plugin, loaded by dotted path."""

from __future__ import annotations

import logging
import re

import pytest

from inferd.plugins.auth import key_digest
from inferd.testing.clients import TRANSPORTS, generate
from inferd.testing.fakes import REPLY, make_app
from inferd.testing.live import live_server

SPEC = "examples.request_id_plugin:RequestIdPlugin"


def example_app(tmp_path, **sections):
    enabled = ["metrics", "auth", "rate_limit", SPEC]
    return make_app(tmp_path, plugins={"enabled": enabled}, **sections)


def audit_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "inferd.audit"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_one_audit_line_per_generation_on_every_transport(tmp_path, transport, caplog):
    app = example_app(tmp_path, auth={"enabled": True, "api_keys": ["k"]})
    headers = {"Authorization": "Bearer k", "X-Request-Id": "trace-42"}
    with caplog.at_level(logging.INFO, logger="inferd.audit"):
        async with live_server(app) as base:
            reply = await generate(base, transport, headers)
    assert reply.text == REPLY
    [line] = audit_lines(caplog)
    endpoint = "completions" if transport == "json" else "chat"
    assert f"request_id=trace-42 caller={key_digest('k')[:12]} endpoint={endpoint}" in line
    assert f"transport={transport} model=fake/model device=cpu" in line
    assert f"generated_tokens={len(REPLY)}" in line
    assert re.search(r"ttft_s=\d+\.\d{4} total_s=\d+\.\d{4} finish_reason=stop$", line)
    if transport != "websocket":
        assert reply.headers["x-request-id"] == "trace-42"


async def test_ids_are_made_up_when_missing_or_unsafe(tmp_path):
    app = example_app(tmp_path)
    _, missing = await app.asgi_client.get("/models")
    _, unsafe = await app.asgi_client.get("/models", headers={"X-Request-Id": "a b\tc"})
    for response in (missing, unsafe):
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])
    assert missing.headers["x-request-id"] != unsafe.headers["x-request-id"]


async def test_rejected_requests_get_an_id_too(tmp_path):
    # Listed before auth, the plugin sees auth's 401 on its way out.
    app = make_app(
        tmp_path,
        plugins={"enabled": [SPEC, "auth"]},
        auth={"enabled": True, "api_keys": ["k"]},
    )
    _, response = await app.asgi_client.get("/models", headers={"X-Request-Id": "r1"})
    assert (response.status, response.headers["x-request-id"]) == (401, "r1")


async def test_its_own_config_table(tmp_path, caplog):
    app = example_app(tmp_path, request_id={"header": "X-Trace", "audit": False})
    with caplog.at_level(logging.INFO, logger="inferd.audit"):
        _, response = await app.asgi_client.post(
            "/completions", json={"model": "fake", "prompt": "hi"}, headers={"X-Trace": "t1"}
        )
    assert response.headers["x-trace"] == "t1"
    assert audit_lines(caplog) == []
