"""inferd/ws_auth.py (with plugins/auth.py): a browser's WebSocket sends its API key as
a subprotocol, since `new WebSocket(url)` cannot set an Authorization header."""

from __future__ import annotations

import base64
import json
import logging

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from inferd.testing.fakes import REPLY, make_app
from inferd.testing.live import live_server

KEY = "ws-key/+="  # characters a subprotocol could not carry unencoded
CHAT = {"model-name": "fake/model", "prompt": "Hi"}


def _key_protocol(key: str) -> str:
    return "inferd.key." + base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


async def _chat(url: str, **options) -> tuple[str | None, str]:
    """One chat message over /chat/ws: the selected subprotocol and the answer."""
    async with connect(url.replace("http", "ws") + "/chat/ws", **options) as ws:
        await ws.send(json.dumps(CHAT))
        frames = []
        while (frame := await ws.recv()) != "__END__":
            frames.append(frame)
        return ws.subprotocol, "".join(frames)


async def test_a_key_offered_as_a_subprotocol_opens_the_socket_and_is_never_echoed(
    tmp_path, caplog
):
    app = make_app(tmp_path, auth={"enabled": True, "api_keys": [KEY]})
    async with live_server(app) as url:
        with caplog.at_level(logging.INFO):
            selected, answer = await _chat(url, subprotocols=["inferd.bearer", _key_protocol(KEY)])
    assert answer == REPLY
    assert selected == "inferd.bearer"  # the key itself is not sent back
    assert not any(KEY in record.getMessage() for record in caplog.records)


async def test_the_authorization_header_still_works(tmp_path):
    app = make_app(tmp_path, auth={"enabled": True, "api_keys": [KEY]})
    async with live_server(app) as url:
        selected, answer = await _chat(url, additional_headers={"Authorization": f"Bearer {KEY}"})
    assert (selected, answer) == (None, REPLY)


@pytest.mark.parametrize(
    "subprotocols",
    [
        None,
        ["inferd.bearer"],
        ["inferd.bearer", _key_protocol("wrong")],
        ["inferd.bearer", "inferd.key.!!"],
    ],
    ids=["nothing", "no-key", "wrong-key", "undecodable"],
)
async def test_a_handshake_without_a_valid_key_is_401(tmp_path, subprotocols):
    app = make_app(tmp_path, auth={"enabled": True, "api_keys": [KEY]})
    async with live_server(app) as url:
        with pytest.raises(InvalidStatus) as refused:
            await _chat(url, subprotocols=subprotocols)
    assert refused.value.response.status_code == 401


async def test_the_key_subprotocol_is_only_for_websockets(tmp_path):
    app = make_app(tmp_path, auth={"enabled": True, "api_keys": [KEY]})
    _, response = await app.asgi_client.get(
        "/sessions", headers={"Sec-WebSocket-Protocol": f"inferd.bearer, {_key_protocol(KEY)}"}
    )
    assert response.status == 401


async def test_with_auth_off_the_bearer_subprotocol_is_still_selected(tmp_path):
    # A browser fails a handshake whose offered subprotocols the server ignores.
    app = make_app(tmp_path)
    async with live_server(app) as url:
        selected, answer = await _chat(url, subprotocols=["inferd.bearer", _key_protocol(KEY)])
        plain = await _chat(url)
    assert (selected, answer) == ("inferd.bearer", REPLY)
    assert plain == (None, REPLY)
