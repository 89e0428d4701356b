"""plugins/auth.py: API keys on every transport, public paths, key sources, session isolation."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from websockets.asyncio.client import connect

from inferd.config import ConfigError
from inferd.plugins.auth import AuthPlugin, key_digest
from inferd.testing.clients import TRANSPORTS, generate, ws_ask, ws_url
from inferd.testing.fakes import REPLY, make_app
from inferd.testing.live import live_server

KEYS = ["key-alice", "key-bob"]
ALICE = {"Authorization": "Bearer key-alice"}
BOB = {"Authorization": "Bearer key-bob"}


def auth_app(tmp_path, **auth):
    return make_app(tmp_path, auth={"enabled": True, "api_keys": KEYS, **auth})


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_every_transport_needs_a_valid_key(tmp_path, transport):
    async with live_server(auth_app(tmp_path)) as base:
        missing = await generate(base, transport)
        wrong = await generate(base, transport, {"Authorization": "Bearer nope"})
        other_scheme = await generate(base, transport, {"Authorization": "Basic key-alice"})
        ok = await generate(base, transport, ALICE)
    assert missing.status == wrong.status == other_scheme.status == 401
    assert missing.error == other_scheme.error
    assert "Authorization: Bearer <key>" in (missing.error or "")
    assert wrong.error == "invalid API key"
    assert missing.headers["www-authenticate"] == "Bearer"
    assert (ok.status, ok.text, ok.error) == (200, REPLY, None)


async def test_scheme_is_case_insensitive_and_whitespace_tolerated(tmp_path):
    app = auth_app(tmp_path)
    _, response = await app.asgi_client.get(
        "/models", headers={"Authorization": "bearer  key-bob "}
    )
    assert response.status == 200


async def test_health_readiness_and_the_web_page_are_public(tmp_path):
    app = auth_app(tmp_path)
    for path in ("/health", "/readiness", "/", "/static/app.js"):
        _, response = await app.asgi_client.get(path)
        assert response.status in (200, 503), path  # readiness may still be loading
    for path in ("/models", "/sessions", "/models/fake"):
        _, response = await app.asgi_client.get(path)
        assert response.status == 401, path


async def test_public_paths_are_configurable_with_prefixes(tmp_path):
    app = auth_app(tmp_path, public_paths=["/models*"])
    for path in ("/models", "/models/fake"):
        _, response = await app.asgi_client.get(path)
        assert response.status == 200, path
    _, page = await app.asgi_client.get("/")
    _, health = await app.asgi_client.get("/health")
    assert page.status == 401  # no longer in the list
    assert health.status == 200  # always public


async def test_a_valid_key_on_a_public_path_still_identifies_the_caller(tmp_path):
    app = auth_app(tmp_path, public_paths=["/sessions"])
    app.ctx.sessions.store.ensure("mine", key_digest("key-alice"), None)
    _, anonymous = await app.asgi_client.get("/sessions")
    _, alice = await app.asgi_client.get("/sessions", headers=ALICE)
    assert (anonymous.json, alice.json) == ([], ["mine"])


async def test_keys_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("INFERD_API_KEYS", " env-one, env-two ,")
    monkeypatch.setenv("MY_KEYS", "custom")
    default = make_app(tmp_path, auth={"enabled": True})
    _, response = await default.asgi_client.get(
        "/models", headers={"Authorization": "Bearer env-two"}
    )
    assert response.status == 200
    custom = make_app(tmp_path, auth={"enabled": True, "api_keys_env": "MY_KEYS"})
    _, yes = await custom.asgi_client.get("/models", headers={"Authorization": "Bearer custom"})
    _, no = await custom.asgi_client.get("/models", headers={"Authorization": "Bearer env-one"})
    assert (yes.status, no.status) == (200, 401)


async def test_a_key_may_be_configured_as_its_sha256_digest(tmp_path):
    digest = hashlib.sha256(b"secret").hexdigest()
    app = auth_app(tmp_path, api_keys=[f"sha256:{digest.upper()}"])
    _, response = await app.asgi_client.get("/models", headers={"Authorization": "Bearer secret"})
    assert response.status == 200


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        ({"enabled": True}, "no API keys"),
        ({"enabled": True, "api_keys": ["sha256:abc"]}, "64 hex digits"),
        ({"enabled": True, "api_keys": "key"}, "auth.api_keys"),
        ({"enabled": True, "api_key": ["k"]}, "unknown key 'auth.api_key'"),
    ],
)
def test_bad_auth_config_fails_at_start_up(tmp_path, monkeypatch, auth, message):
    monkeypatch.delenv("INFERD_API_KEYS", raising=False)
    with pytest.raises(ConfigError, match=message):
        make_app(tmp_path, auth=auth)


def test_disabled_auth_needs_no_keys_and_is_not_in_the_chain(tmp_path):
    app = make_app(tmp_path, auth={"enabled": False})
    assert not any(isinstance(p, AuthPlugin) for p in app.ctx.plugins.plugins)


async def test_every_configured_key_is_compared_in_constant_time(tmp_path, monkeypatch):
    calls = []
    compare = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(len(a) == len(b) == 64)
        return compare(a, b)

    monkeypatch.setattr("inferd.plugins.auth.hmac.compare_digest", counting)
    app = auth_app(tmp_path, api_keys=["k1", "k2", "k3"])
    await app.asgi_client.get("/models", headers={"Authorization": "Bearer k1"})
    # All three keys are checked even though the first matched, always digest against digest.
    assert calls == [True, True, True]


@pytest.mark.parametrize("transport", ["sse", "websocket"])
async def test_sessions_belong_to_the_key_that_created_them(tmp_path, transport):
    app = auth_app(tmp_path)
    async with live_server(app) as base:
        created = await generate(base, transport, ALICE, session_id="alice-chat")
        assert created.error is None
        # Bob can neither continue Alice's session nor see that it exists.
        hijack = await generate(base, transport, BOB, session_id="alice-chat")
    assert hijack.error == "session 'alice-chat' not found"
    assert hijack.status == (404 if transport == "sse" else 200)

    client = app.asgi_client
    _, alice_list = await client.get("/sessions", headers=ALICE)
    _, bob_list = await client.get("/sessions", headers=BOB)
    assert (alice_list.json, bob_list.json) == (["alice-chat"], [])
    for method, path in [
        ("get", "/chat/history/alice-chat"),
        ("post", "/chat/history/alice-chat/rollback"),
        ("delete", "/chat/history/alice-chat"),
    ]:
        _, response = await getattr(client, method)(path, headers=BOB)
        assert response.status == 404, (method, path)
        assert response.json == {"error": "session 'alice-chat' not found"}
    _, history = await client.get("/chat/history/alice-chat", headers=ALICE)
    assert [m["content"] for m in history.json] == ["hi", REPLY]


async def test_a_websocket_keeps_its_callers_identity_across_messages(tmp_path):
    app = auth_app(tmp_path)
    async with live_server(app) as base, connect(ws_url(base), additional_headers=ALICE) as ws:
        for _ in range(2):
            reply = await ws_ask(ws, {"model-name": "fake", "prompt": "hi"})
            assert reply.error is None
    _, alice = await app.asgi_client.get("/sessions", headers=ALICE)
    _, bob = await app.asgi_client.get("/sessions", headers=BOB)
    assert (len(alice.json), bob.json) == (1, [])  # one socket, one session, Alice's
