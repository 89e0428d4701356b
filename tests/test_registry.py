"""inferd/registry.py: finding a model by id, name or path, and device checks."""

from __future__ import annotations

import pytest

from inferd import registry as registry_module
from inferd.config import ModelConfig
from inferd.errors import BadRequest, NotFound
from inferd.registry import ModelRegistry, default_backend_factory


def _registry(path: str) -> ModelRegistry:
    model = ModelConfig(id="tiny", name="org/tiny", path=path)
    return ModelRegistry([model], backend_factory=lambda m, d: None, devices=("cpu",))


def test_a_model_is_found_by_id_name_or_configured_path(tmp_path):
    registry = _registry(str(tmp_path))
    for name in ("tiny", "org/tiny", str(tmp_path)):
        assert registry.find(name).id == "tiny"


def test_a_local_path_is_found_as_typed_relative_or_through_a_symlink(tmp_path, monkeypatch):
    model_dir = tmp_path / "models" / "tiny"
    model_dir.mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "models")
    registry = _registry(str(model_dir))
    monkeypatch.chdir(tmp_path / "models")
    assert registry.find("../models/tiny").id == "tiny"
    assert registry.find(str(tmp_path / "link" / "tiny")).id == "tiny"


def test_an_unknown_model_is_404_listing_the_known_ones(tmp_path):
    with pytest.raises(NotFound, match="available models: org/tiny"):
        _registry(str(tmp_path)).find("other")


def test_a_device_this_machine_lacks_is_400_listing_the_available_ones(tmp_path):
    with pytest.raises(BadRequest, match="available devices: cpu"):
        _registry(str(tmp_path)).worker("tiny", "cuda")


@pytest.mark.parametrize("compile_decode", [None, True, False])
def test_the_engine_options_of_a_model_reach_its_torch_backend(tmp_path, compile_decode):
    model = ModelConfig(
        id="tiny",
        name="org/tiny",
        path=str(tmp_path),
        max_batch_tokens=32,
        prefill_slowdown=1.5,
        compile=compile_decode,
    )
    backend = default_backend_factory(model, "cpu")
    assert backend.options.compile is compile_decode
    assert backend.options.max_batch_tokens == 32
    assert backend.options.prefill_slowdown == 1.5


def test_a_cpu_model_gathers_requests_sent_together_and_a_configured_one_as_told(tmp_path):
    models = [
        ModelConfig(id="a", name="a", path=str(tmp_path)),
        ModelConfig(id="b", name="b", path=str(tmp_path), arrival_window_ms=0),
    ]
    registry = ModelRegistry(models, backend_factory=lambda m, d: None, devices=("cpu",))
    assert registry.worker("a", "cpu").arrival_window == 0.005
    assert registry.worker("b", "cpu").arrival_window == 0.0


def test_the_process_allocator_is_set_before_a_cpu_models_thread_exists(tmp_path, monkeypatch):
    """glibc's one arena must be set before the owner thread's first allocation."""
    calls: list[str] = []
    monkeypatch.setattr(registry_module, "keep_freed_memory", lambda: calls.append("set"))
    models = [ModelConfig(id="a", name="a", path=str(tmp_path))]
    registry = ModelRegistry(models, backend_factory=lambda m, d: None, devices=("cpu", "cuda"))
    registry.worker("a", "cuda")
    assert calls == []  # a GPU model computes on the GPU
    worker = registry.worker("a", "cpu")
    assert calls == ["set"]
    assert worker.state == "unloaded"  # its thread starts later, on first use or preload
    registry.worker("a", "cpu")
    assert calls == ["set"]
