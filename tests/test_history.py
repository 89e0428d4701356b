"""inferd/history.py: GET /sessions, GET|DELETE /chat/history/<id>, POST .../rollback."""

from __future__ import annotations

from inferd.testing.fakes import REPLY, make_app


async def _chat(app, session_id: str, prompt: str, **fields) -> None:
    body = {"model-name": "fake", "prompt": prompt, "session-id": session_id, **fields}
    _, response = await app.asgi_client.post("/chat/completions", json=body)
    assert response.status == 200


async def _app_with_history(tmp_path, session_id: str = "s1", turns: int = 2):
    """An app whose session holds a system prompt and `turns` exchanges."""
    app = make_app(tmp_path)
    for number in range(turns):
        system = {"system-prompt": "Rules."} if number == 0 else {}
        await _chat(app, session_id, f"q{number}", **system)
    return app


async def test_sessions_is_an_empty_list_at_first(tmp_path):
    app = make_app(tmp_path)
    _, response = await app.asgi_client.get("/sessions")
    assert response.status == 200
    assert response.json == []


async def test_sessions_lists_every_session_oldest_first(tmp_path):
    app = make_app(tmp_path)
    for session_id in ("zeta", "alpha", "mid"):
        await _chat(app, session_id, "hi")
    _, response = await app.asgi_client.get("/sessions")
    assert response.json == ["zeta", "alpha", "mid"]


async def test_history_returns_the_messages_in_order(tmp_path):
    app = await _app_with_history(tmp_path)
    _, response = await app.asgi_client.get("/chat/history/s1")
    assert response.status == 200
    assert response.json == [
        {"role": "system", "content": "Rules."},
        {"role": "user", "content": "q0"},
        {"role": "assistant", "content": REPLY},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": REPLY},
    ]


async def test_session_routes_accept_every_character_a_session_id_may_hold(tmp_path):
    app = make_app(tmp_path)
    session_id = "Ab9._:-x"
    await _chat(app, session_id, "hi")
    _, response = await app.asgi_client.get(f"/chat/history/{session_id}")
    assert [m["content"] for m in response.json] == ["hi", REPLY]
    _, response = await app.asgi_client.post(f"/chat/history/{session_id}/rollback")
    assert response.json == {"status": "ok", "remaining": 1}
    _, response = await app.asgi_client.delete(f"/chat/history/{session_id}")
    assert response.status == 204


async def test_session_routes_decode_percent_encoded_ids(tmp_path):
    # What a browser's encodeURIComponent("user:42") sends.
    app = make_app(tmp_path)
    await _chat(app, "user:42", "hi")
    _, response = await app.asgi_client.get("/chat/history/user%3A42")
    assert [m["content"] for m in response.json] == ["hi", REPLY]
    _, response = await app.asgi_client.post("/chat/history/user%3A42/rollback")
    assert response.json == {"status": "ok", "remaining": 1}
    _, response = await app.asgi_client.delete("/chat/history/user%3A42")
    assert response.status == 204


async def test_history_of_an_unknown_session_is_404(tmp_path):
    app = make_app(tmp_path)
    _, response = await app.asgi_client.get("/chat/history/nope")
    assert response.status == 404
    assert response.json == {"error": "session 'nope' not found"}


async def test_delete_is_204_and_the_session_is_gone(tmp_path):
    app = await _app_with_history(tmp_path)
    _, response = await app.asgi_client.delete("/chat/history/s1")
    assert response.status == 204
    assert response.body == b""
    _, response = await app.asgi_client.get("/chat/history/s1")
    assert response.status == 404
    _, response = await app.asgi_client.get("/sessions")
    assert response.json == []


async def test_delete_of_an_unknown_session_is_404(tmp_path):
    app = make_app(tmp_path)
    _, response = await app.asgi_client.delete("/chat/history/nope")
    assert response.status == 404
    assert "'nope'" in response.json["error"]


async def test_a_deleted_session_id_starts_afresh(tmp_path):
    app = await _app_with_history(tmp_path)
    await app.asgi_client.delete("/chat/history/s1")
    await _chat(app, "s1", "again")
    _, response = await app.asgi_client.get("/chat/history/s1")
    assert [m["content"] for m in response.json] == ["again", REPLY]


async def test_rollback_without_a_body_removes_the_last_message(tmp_path):
    app = await _app_with_history(tmp_path)
    _, response = await app.asgi_client.post("/chat/history/s1/rollback")
    assert response.status == 200
    assert response.json["status"] == "ok"
    assert response.json["remaining"] == 4
    _, history = await app.asgi_client.get("/chat/history/s1")
    assert history.json[-1] == {"role": "user", "content": "q1"}


async def test_rollback_with_an_empty_object_removes_one_message(tmp_path):
    app = await _app_with_history(tmp_path)
    _, response = await app.asgi_client.post("/chat/history/s1/rollback", json={})
    assert response.json == {"status": "ok", "remaining": 4}


async def test_rollback_removes_the_last_n_messages(tmp_path):
    app = await _app_with_history(tmp_path)
    _, response = await app.asgi_client.post("/chat/history/s1/rollback", json={"amount": 2})
    assert response.status == 200
    assert response.json == {"status": "ok", "remaining": 3}
    _, history = await app.asgi_client.get("/chat/history/s1")
    assert [m["content"] for m in history.json] == ["Rules.", "q0", REPLY]


async def test_rollback_past_the_start_empties_the_session_but_keeps_it(tmp_path):
    app = await _app_with_history(tmp_path)
    _, response = await app.asgi_client.post("/chat/history/s1/rollback", json={"amount": 50})
    assert response.json == {"status": "ok", "remaining": 0}
    _, history = await app.asgi_client.get("/chat/history/s1")
    assert history.status == 200
    assert history.json == []


async def test_the_next_turn_after_a_rollback_does_not_see_the_removed_messages(tmp_path):
    app = await _app_with_history(tmp_path)
    await app.asgi_client.post("/chat/history/s1/rollback", json={"amount": 2})
    await _chat(app, "s1", "q1 again")
    prompt = "".join(chr(t) for t in app.ctx.fake_backend.prompts[-1])
    assert "q1\n" not in prompt
    assert prompt.endswith("User: q1 again\nAssistant:")


async def test_rollback_of_an_unknown_session_is_404(tmp_path):
    app = make_app(tmp_path)
    _, response = await app.asgi_client.post("/chat/history/nope/rollback", json={"amount": 1})
    assert response.status == 404
    assert response.json == {"error": "session 'nope' not found"}


INVALID_ROLLBACKS = [
    ({"amount": 0}, "'amount'"),
    ({"amount": -3}, "'amount'"),
    ({"amount": "2"}, "'amount'"),
    ({"amount": 1.0}, "'amount'"),
    ({"count": 2}, "unknown field 'count'"),
]


async def test_invalid_rollback_bodies_are_400(tmp_path):
    app = await _app_with_history(tmp_path, turns=1)
    for body, fragment in INVALID_ROLLBACKS:
        _, response = await app.asgi_client.post("/chat/history/s1/rollback", json=body)
        assert response.status == 400, body
        assert fragment in response.json["error"], body
    _, history = await app.asgi_client.get("/chat/history/s1")
    assert len(history.json) == 3  # nothing was removed


async def test_malformed_rollback_json_is_400(tmp_path):
    app = await _app_with_history(tmp_path, turns=1)
    _, response = await app.asgi_client.post("/chat/history/s1/rollback", content=b"{amount")
    assert response.status == 400
    assert response.json["error"].startswith("malformed JSON body")
