"""plugins/rate_limit.py: limits on every transport, headers, per-key limits, client addresses."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest
from sanic.compat import Header
from websockets.asyncio.client import connect

from inferd.config import ConfigError
from inferd.plugins.rate_limit import RateLimitConfig, RateLimitPlugin
from inferd.testing.clients import TRANSPORTS, generate, ws_ask, ws_url
from inferd.testing.fakes import make_app
from inferd.testing.live import live_server

CHAT = {"model-name": "fake", "prompt": "hi"}


def limited_app(tmp_path, per_minute=2, auth=None, **rate_limit):
    sections = {"rate_limit": {"enabled": True, "requests_per_minute": per_minute, **rate_limit}}
    if auth:
        sections["auth"] = {"enabled": True, "api_keys": auth}
    return make_app(tmp_path, **sections)


def assert_limit_headers(headers, limit, remaining):
    assert headers["x-ratelimit-limit"] == str(limit)
    assert headers["x-ratelimit-remaining"] == str(remaining)
    assert time.time() <= int(headers["x-ratelimit-reset"]) <= time.time() + 61


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_every_transport_is_limited_with_headers(tmp_path, transport):
    async with live_server(limited_app(tmp_path, per_minute=2)) as base:
        replies = [await generate(base, transport) for _ in range(3)]
    first, second, refused = replies
    assert first.error is second.error is None
    assert refused.status == 429
    assert refused.error == "Rate limit exceeded"
    assert_limit_headers(refused.headers, 2, 0)
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    if transport != "websocket":  # an accepted upgrade has no response for headers
        assert_limit_headers(first.headers, 2, 1)
        assert_limit_headers(second.headers, 2, 0)


async def test_each_websocket_message_counts_and_the_socket_survives_a_refusal(tmp_path):
    async with live_server(limited_app(tmp_path, per_minute=2)) as base:
        async with connect(ws_url(base)) as ws:
            replies = [await ws_ask(ws, CHAT) for _ in range(3)]
            assert [r.error for r in replies[:2]] == [None, None]
            assert (replies[2].error or "").startswith("Rate limit exceeded; retry after ")
            assert replies[2].text == ""
        # The quota is spent: the next handshake is refused before the upgrade.
        refused = await generate(base, "websocket")
    assert refused.status == 429


async def test_a_handshake_alone_uses_no_quota(tmp_path):
    async with live_server(limited_app(tmp_path, per_minute=1)) as base:
        for _ in range(3):
            async with connect(ws_url(base)):
                pass
        reply = await generate(base, "json")
    assert reply.status == 200


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_per_key_limits_and_separate_counters(tmp_path, transport):
    app = limited_app(tmp_path, per_minute=1, auth=["gold", "plain"], per_key={"gold": 3})
    gold, plain = {"Authorization": "Bearer gold"}, {"Authorization": "Bearer plain"}
    async with live_server(app) as base:
        gold_statuses = [(await generate(base, transport, gold)).status for _ in range(4)]
        plain_statuses = [(await generate(base, transport, plain)).status for _ in range(2)]
        gold_refused = await generate(base, transport, gold)
    assert gold_statuses == [200, 200, 200, 429]
    assert plain_statuses == [200, 429]
    assert gold_refused.headers["x-ratelimit-limit"] == "3"


async def test_errors_and_streams_carry_the_headers_too(tmp_path):
    app = limited_app(tmp_path, per_minute=5)
    _, bad = await app.asgi_client.post("/completions", json={"model": "fake"})
    _, unknown = await app.asgi_client.get("/models/nope")
    assert (bad.status, unknown.status) == (400, 404)
    assert_limit_headers(bad.headers, 5, 4)
    assert_limit_headers(unknown.headers, 5, 3)


async def test_health_readiness_and_metrics_are_exempt(tmp_path):
    app = limited_app(tmp_path, per_minute=1)
    for _ in range(3):
        for path in ("/health", "/metrics"):
            _, response = await app.asgi_client.get(path)
            assert response.status == 200
            assert "x-ratelimit-limit" not in response.headers


async def test_an_unverified_key_does_not_buy_a_fresh_counter(tmp_path):
    # Without auth nobody checks keys: made-up keys share their address's counter.
    app = limited_app(tmp_path, per_minute=1)
    _, first = await app.asgi_client.get("/models", headers={"Authorization": "Bearer a"})
    _, second = await app.asgi_client.get("/models", headers={"Authorization": "Bearer b"})
    assert (first.status, second.status) == (200, 429)


def fake_request(peer: str, forwarded: list[str] | None = None) -> SimpleNamespace:
    headers = Header([("X-Forwarded-For", value) for value in forwarded or []])
    return SimpleNamespace(ip=peer, headers=headers)


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("203.0.113.9", ["1.1.1.1"], "203.0.113.9"),  # not our proxy: header ignored
        ("127.0.0.1", ["1.1.1.1"], "1.1.1.1"),
        ("127.0.0.1", ["6.6.6.6, 1.1.1.1, 10.0.0.5"], "1.1.1.1"),  # spoofed first hop ignored
        ("127.0.0.1", ["6.6.6.6", "1.1.1.1"], "1.1.1.1"),  # several headers read as one list
        ("127.0.0.1", ["10.0.0.7"], "10.0.0.7"),  # only proxies: the farthest one
        ("127.0.0.1", [], "127.0.0.1"),
        ("::1", ["2001:db8::1"], "2001:db8::1"),
    ],
)
def test_forwarded_for_is_trusted_only_from_configured_proxies(peer, forwarded, client):
    plugin = RateLimitPlugin(
        RateLimitConfig(enabled=True, trusted_proxies=["127.0.0.1", "::1", "10.0.0.0/8"])
    )
    assert plugin.client_address(fake_request(peer, forwarded)) == client


async def test_clients_behind_a_trusted_proxy_get_their_own_counters(tmp_path):
    app = limited_app(tmp_path, per_minute=1, trusted_proxies=["127.0.0.1"])
    async with live_server(app) as base:
        one = {"X-Forwarded-For": "198.51.100.1"}
        two = {"X-Forwarded-For": "198.51.100.2"}
        statuses = [(await generate(base, "json", h)).status for h in (one, two, one)]
    assert statuses == [200, 200, 429]


@pytest.mark.parametrize("strategy", ["moving-window", "sliding-window-counter"])
async def test_other_strategies_of_the_limits_library(tmp_path, strategy):
    # The sliding-window counter's windows are aligned to the clock's minutes: across a
    # boundary it weighs the earlier hits down and may admit a third. Stay clear of one.
    while time.time() % 60 > 55:
        await asyncio.sleep(0.5)
    app = limited_app(tmp_path, per_minute=2, strategy=strategy)
    statuses = [(await app.asgi_client.get("/models"))[1].status for _ in range(3)]
    assert statuses == [200, 200, 429]


async def test_an_unreachable_storage_stops_start_up(tmp_path):
    app = limited_app(tmp_path)
    [plugin] = [p for p in app.ctx.plugins.plugins if isinstance(p, RateLimitPlugin)]

    async def down() -> bool:
        raise ConnectionError("connection refused")

    plugin.storage.check = down
    with pytest.raises(RuntimeError, match="storage memory:// is unreachable"):
        async with live_server(app):
            pass


@pytest.mark.parametrize(
    ("rate_limit", "message"),
    [
        ({"requests_per_minute": 0}, "rate_limit.requests_per_minute"),
        ({"per_key": {"k": 0}}, "rate_limit.per_key.k"),
        ({"strategy": "token-bucket"}, "rate_limit.strategy"),
        ({"storage_uri": "nosuch://x"}, "unknown storage scheme"),
        ({"trusted_proxies": ["not-an-ip"]}, "not-an-ip"),
        ({"limit": 5}, "unknown key 'rate_limit.limit'"),
    ],
)
def test_bad_rate_limit_config_fails_at_start_up(tmp_path, rate_limit, message):
    with pytest.raises(ConfigError, match=message):
        make_app(tmp_path, rate_limit={"enabled": True, **rate_limit})


async def test_the_web_page_and_its_files_are_exempt_by_default(tmp_path):
    app = make_app(tmp_path, rate_limit={"enabled": True, "requests_per_minute": 1})
    for path in ("/", "/static/app.js", "/", "/static/style.css"):
        _, response = await app.asgi_client.get(path)
        assert response.status == 200, path
        assert "x-ratelimit-limit" not in response.headers
    _, first = await app.asgi_client.get("/models")
    _, second = await app.asgi_client.get("/models")
    assert (first.status, second.status) == (200, 429)
