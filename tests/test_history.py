"""inferd/history.py: GET /sessions, GET|DELETE /chat/history/<id>, POST .../rollback."""

from __future__ import annotations

import re

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


# ---- extensions: ?detail=true, fork, rename, import -----------------------------------

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


async def test_detail_lists_each_sessions_metadata_oldest_first(tmp_path):
    app = await _app_with_history(tmp_path)
    await _chat(app, "s2", "A   second\nchat")
    _, response = await app.asgi_client.get("/sessions?detail=true")
    assert response.status == 200
    first, second = response.json
    assert set(first) == {
        "id",
        "title",
        "created",
        "updated",
        "message_count",
        "parent",
        "fork_point",
    }
    assert (first["id"], first["title"], first["message_count"]) == ("s1", "q0", 5)
    assert (second["id"], second["title"]) == ("s2", "A second chat")  # on one line
    assert (first["parent"], first["fork_point"]) == (None, None)
    for detail in (first, second):
        assert ISO.match(detail["created"]) and ISO.match(detail["updated"])
        assert detail["updated"] >= detail["created"]
    assert second["updated"] > first["updated"]


async def test_detail_false_and_no_detail_keep_the_plain_id_list(tmp_path):
    app = await _app_with_history(tmp_path)
    for query in ("", "?detail=false", "?detail=0"):
        _, response = await app.asgi_client.get(f"/sessions{query}")
        assert response.json == ["s1"], query


async def test_detail_with_a_bad_flag_is_400(tmp_path):
    app = make_app(tmp_path)
    _, response = await app.asgi_client.get("/sessions?detail=maybe")
    assert response.status == 400
    assert "'detail'" in response.json["error"]


async def test_default_titles_are_shortened(tmp_path):
    app = make_app(tmp_path)
    await _chat(app, "long", "word " * 40)
    _, response = await app.asgi_client.get("/sessions?detail=true")
    title = response.json[0]["title"]
    assert len(title) == 80
    assert title.endswith("…")


async def test_fork_makes_a_new_session_from_the_first_messages(tmp_path):
    app = await _app_with_history(tmp_path)
    _, response = await app.asgi_client.post("/chat/history/s1/fork", json={"keep": 3})
    assert response.status == 201
    child = response.json
    assert (child["parent"], child["fork_point"], child["message_count"]) == ("s1", 3, 3)
    _, history = await app.asgi_client.get(f"/chat/history/{child['id']}")
    assert [m["content"] for m in history.json] == ["Rules.", "q0", REPLY]
    # The branch goes its own way; the parent keeps everything.
    await _chat(app, child["id"], "another q1")
    _, history = await app.asgi_client.get(f"/chat/history/{child['id']}")
    assert [m["content"] for m in history.json][3:] == ["another q1", REPLY]
    prompt = "".join(chr(t) for t in app.ctx.fake_backend.prompts[-1])
    assert "User: q1\n" not in prompt
    _, parent = await app.asgi_client.get("/chat/history/s1")
    assert len(parent.json) == 5
    _, listing = await app.asgi_client.get("/sessions")
    assert listing.json == ["s1", child["id"]]


async def test_fork_without_a_body_copies_every_message(tmp_path):
    app = await _app_with_history(tmp_path, turns=1)
    _, response = await app.asgi_client.post("/chat/history/s1/fork")
    assert response.status == 201
    assert response.json["fork_point"] == response.json["message_count"] == 3


async def test_fork_of_an_unknown_session_is_404(tmp_path):
    app = make_app(tmp_path)
    _, response = await app.asgi_client.post("/chat/history/nope/fork", json={"keep": 0})
    assert response.status == 404
    assert response.json == {"error": "session 'nope' not found"}


async def test_fork_with_a_bad_keep_is_400_and_makes_nothing(tmp_path):
    app = await _app_with_history(tmp_path, turns=1)
    bodies = [{"keep": 4}, {"keep": -1}, {"keep": "1"}, {"keep": 1.5}, {"amount": 1}]
    for body in bodies:
        _, response = await app.asgi_client.post("/chat/history/s1/fork", json=body)
        assert response.status == 400, body
        assert isinstance(response.json["error"], str), body
    _, response = await app.asgi_client.post("/chat/history/s1/fork", json={"keep": 4})
    assert "between 0 and 3" in response.json["error"]
    _, listing = await app.asgi_client.get("/sessions")
    assert listing.json == ["s1"]


async def test_rename_sets_the_title_and_null_restores_the_default(tmp_path):
    app = await _app_with_history(tmp_path, turns=1)
    _, before = await app.asgi_client.get("/sessions?detail=true")
    _, response = await app.asgi_client.patch("/chat/history/s1", json={"title": "  My\nchat "})
    assert response.status == 200
    assert response.json["title"] == "My chat"
    assert response.json["updated"] == before.json[0]["updated"]
    _, listing = await app.asgi_client.get("/sessions?detail=true")
    assert listing.json[0]["title"] == "My chat"
    for reset in (None, "", "   "):
        await app.asgi_client.patch("/chat/history/s1", json={"title": "x"})
        _, response = await app.asgi_client.patch("/chat/history/s1", json={"title": reset})
        assert response.json["title"] == "q0", reset
    _, history = await app.asgi_client.get("/chat/history/s1")
    assert len(history.json) == 3  # the messages are untouched


async def test_rename_errors(tmp_path):
    app = await _app_with_history(tmp_path, turns=1)
    _, response = await app.asgi_client.patch("/chat/history/nope", json={"title": "x"})
    assert response.status == 404
    for body in ({}, {"title": 5}, {"title": "x" * 201}, {"name": "x"}):
        _, response = await app.asgi_client.patch("/chat/history/s1", json=body)
        assert response.status == 400, body
    _, response = await app.asgi_client.patch("/chat/history/s1")
    assert response.status == 400


async def test_import_creates_a_session_holding_the_messages(tmp_path):
    app = make_app(tmp_path)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
    ]
    body = {"messages": messages, "title": "Imported"}
    _, response = await app.asgi_client.post("/chat/history", json=body)
    assert response.status == 201
    assert (response.json["title"], response.json["message_count"]) == ("Imported", 3)
    _, history = await app.asgi_client.get(f"/chat/history/{response.json['id']}")
    assert history.json == messages
    await _chat(app, response.json["id"], "And now?")
    prompt = "".join(chr(t) for t in app.ctx.fake_backend.prompts[-1])
    assert "Be brief." in prompt and "Hello" in prompt


async def test_import_rejects_malformed_messages(tmp_path):
    app = make_app(tmp_path)
    bodies = [
        {},
        {"messages": "hi"},
        {"messages": [{"role": "robot", "content": "x"}]},
        {"messages": [{"role": "user"}]},
        {"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]},
        {"messages": [], "extra": 1},
    ]
    for body in bodies:
        _, response = await app.asgi_client.post("/chat/history", json=body)
        assert response.status == 400, body
        assert isinstance(response.json["error"], str)
    _, listing = await app.asgi_client.get("/sessions")
    assert listing.json == []


async def test_extensions_respect_session_owners(tmp_path):
    app = make_app(tmp_path, auth={"enabled": True, "api_keys": ["alice", "bob"]})
    alice = {"Authorization": "Bearer alice"}
    bob = {"Authorization": "Bearer bob"}
    body = {"model-name": "fake", "prompt": "mine", "session-id": "s"}
    await app.asgi_client.post("/chat/completions", json=body, headers=alice)
    _, response = await app.asgi_client.post("/chat/history/s/fork", json={}, headers=bob)
    assert response.status == 404
    _, response = await app.asgi_client.patch("/chat/history/s", json={"title": "x"}, headers=bob)
    assert response.status == 404
    _, response = await app.asgi_client.get("/sessions?detail=true", headers=bob)
    assert response.json == []
    _, response = await app.asgi_client.post("/chat/history/s/fork", json={}, headers=alice)
    assert response.status == 201
    _, response = await app.asgi_client.get("/sessions?detail=true", headers=alice)
    assert len(response.json) == 2
