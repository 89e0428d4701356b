"""inferd/models.py: GET /models and GET /models/<id or name>."""

from __future__ import annotations

import json

from inferd.testing.fakes import FakeBackend, make_app

MODELS = [
    {"id": "fake", "name": "fake/model", "path": "/nonexistent/fake", "preload": False},
    {
        "id": "other",
        "preload": False,
        "name": "Org/Other-Model-0.5B",
        "path": "/nonexistent/other",
        "context_length": 4096,
        "quantization": "bf16",
        "device": "cuda",
    },
]


async def test_list_models_returns_the_configured_names_in_order(tmp_path):
    app = make_app(tmp_path, models=MODELS)
    _, response = await app.asgi_client.get("/models")
    assert response.status == 200
    assert response.json == {"models": ["fake/model", "Org/Other-Model-0.5B"]}


async def test_list_models_is_empty_without_models(tmp_path):
    app = make_app(tmp_path, models=[])
    _, response = await app.asgi_client.get("/models")
    assert response.json == {"models": []}


async def test_a_percent_encoded_slash_in_a_model_name_is_decoded(tmp_path):
    app = make_app(tmp_path, models=MODELS)
    _, response = await app.asgi_client.get("/models/Org%2FOther-Model-0.5B")
    assert response.status == 200
    assert response.json["id"] == "other"


async def test_model_by_name_containing_a_slash(tmp_path):
    app = make_app(tmp_path, models=MODELS)
    _, response = await app.asgi_client.get("/models/Org/Other-Model-0.5B")
    assert response.status == 200
    assert response.json == {
        "id": "other",
        "name": "Org/Other-Model-0.5B",
        "context_length": 4096,
        "quantization": "bf16",
        "device": "cuda",
        "loaded_devices": [],
    }


async def test_a_trailing_slash_is_never_part_of_a_name(tmp_path):
    app = make_app(tmp_path, models=MODELS)
    _, listed = await app.asgi_client.get("/models/")
    assert listed.status == 200
    assert listed.json == {"models": ["fake/model", "Org/Other-Model-0.5B"]}
    for path in ("/models/fake/", "/models/fake/model/", "/models/Org%2FOther-Model-0.5B/"):
        _, response = await app.asgi_client.get(path)
        assert response.status == 200, path
        assert response.json["id"] in {"fake", "other"}, path


async def test_model_by_id_matches_model_by_name(tmp_path):
    app = make_app(tmp_path, models=MODELS)
    _, by_id = await app.asgi_client.get("/models/other")
    _, by_name = await app.asgi_client.get("/models/Org/Other-Model-0.5B")
    assert by_id.status == 200
    assert by_id.json == by_name.json


async def test_unknown_model_is_404_naming_the_available_models(tmp_path):
    app = make_app(tmp_path, models=MODELS)
    _, response = await app.asgi_client.get("/models/Org/Missing")
    assert response.status == 404
    assert "'Org/Missing'" in response.json["error"]
    assert "fake/model" in response.json["error"]
    assert "Org/Other-Model-0.5B" in response.json["error"]


async def test_context_length_is_unknown_until_loaded_then_comes_from_the_model(tmp_path):
    app = make_app(tmp_path, FakeBackend(context_length=300))
    _, before = await app.asgi_client.get("/models/fake")
    assert before.json["context_length"] is None
    assert before.json["loaded_devices"] == []

    await app.asgi_client.post("/completions", json={"model": "fake", "prompt": "hi"})
    _, after = await app.asgi_client.get("/models/fake")
    assert after.json["context_length"] == 300
    assert after.json["loaded_devices"] == ["cpu"]


async def test_context_length_is_read_from_a_local_config_json(tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps({"max_position_embeddings": 2048}))
    app = make_app(
        tmp_path,
        models=[{"id": "local", "name": "local", "path": str(model_dir), "preload": False}],
    )
    _, response = await app.asgi_client.get("/models/local")
    assert response.json["context_length"] == 2048


async def test_loaded_devices_lists_each_device_a_model_serves(tmp_path):
    app = make_app(tmp_path)
    for device in ("cpu", "cuda"):
        _, response = await app.asgi_client.post(
            "/completions", json={"model": "fake", "prompt": "hi", "device": device}
        )
        assert response.status == 200
    _, response = await app.asgi_client.get("/models/fake/model")
    assert sorted(response.json["loaded_devices"]) == ["cpu", "cuda"]


async def test_quantization_is_the_device_default_until_loaded_then_the_models_own(tmp_path):
    app = make_app(tmp_path)
    _, before = await app.asgi_client.get("/models/fake")
    assert before.json["quantization"] == "int8"  # the torch CPU default

    await app.asgi_client.post("/completions", json={"model": "fake", "prompt": "hi"})
    _, after = await app.asgi_client.get("/models/fake")
    assert after.json["quantization"] is None  # what the loaded (fake) backend reports
