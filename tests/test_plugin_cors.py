"""plugins/cors.py: preflights answered before auth, allowed origins, exposed headers."""

from __future__ import annotations

from inferd.testing.fakes import make_app

ORIGIN = "https://app.example"
PREFLIGHT = {"origin": ORIGIN, "access-control-request-method": "POST"}
CHAT = {"model-name": "fake", "prompt": "hi"}


def _app(tmp_path, **cors):
    return make_app(
        tmp_path,
        cors={"enabled": True, "allow_origins": [ORIGIN], **cors},
        auth={"enabled": True, "api_keys": ["secret"]},
    )


async def test_a_preflight_from_an_allowed_origin_gets_204_without_a_key(tmp_path):
    app = _app(tmp_path)
    headers = {**PREFLIGHT, "access-control-request-headers": "authorization, content-type"}
    _, response = await app.asgi_client.options("/chat/completions", headers=headers)
    assert response.status == 204
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert response.headers["access-control-allow-methods"] == (
        "DELETE, GET, HEAD, OPTIONS, PATCH, POST"  # every method a route takes
    )
    assert response.headers["access-control-allow-headers"] == "authorization, content-type"
    assert response.headers["access-control-max-age"] == "600"


async def test_a_preflight_from_another_origin_gets_no_cors_headers(tmp_path):
    app = _app(tmp_path)
    headers = {**PREFLIGHT, "origin": "https://evil.example"}
    _, response = await app.asgi_client.options("/chat/completions", headers=headers)
    assert "access-control-allow-origin" not in response.headers


async def test_responses_expose_the_session_id_to_allowed_origins(tmp_path):
    app = _app(tmp_path)
    headers = {"origin": ORIGIN, "authorization": "Bearer secret"}
    _, response = await app.asgi_client.post("/chat/completions", json=CHAT, headers=headers)
    assert response.status == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "X-Session-Id" in response.headers["access-control-expose-headers"]


async def test_errors_carry_cors_headers_so_browsers_can_read_them(tmp_path):
    app = _app(tmp_path)
    _, response = await app.asgi_client.post(
        "/chat/completions", json=CHAT, headers={"origin": ORIGIN}
    )
    assert response.status == 401
    assert response.headers["access-control-allow-origin"] == ORIGIN


async def test_a_star_allows_any_origin(tmp_path):
    app = _app(tmp_path, allow_origins=["*"])
    _, response = await app.asgi_client.get("/health", headers={"origin": "https://x.example"})
    assert response.headers["access-control-allow-origin"] == "*"


async def test_cors_is_off_by_default(tmp_path):
    app = make_app(tmp_path)
    _, response = await app.asgi_client.get("/health", headers={"origin": ORIGIN})
    assert "access-control-allow-origin" not in response.headers
