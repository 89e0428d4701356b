"""inferd/cli.py: `inferd serve` builds its config from files and flags (no server starts)."""

from __future__ import annotations

import argparse
import logging

import pytest

from inferd.cli import build_config, main


@pytest.fixture(autouse=True)
def _restore_logging():
    """main() configures the "inferd" logger for the process; undo it after each test."""
    logger = logging.getLogger("inferd")
    handlers, level = list(logger.handlers), logger.level
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)


def _args(**overrides) -> argparse.Namespace:
    values = {
        "config": None,
        "model": None,
        "device": None,
        "host": None,
        "port": None,
        "access_log": False,
    }
    return argparse.Namespace(**{**values, **overrides})


def test_model_hub_id_gives_a_one_model_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = build_config(_args(model="Qwen/Qwen2.5-0.5B-Instruct"))
    (model,) = config.models
    assert model.id == "Qwen2.5-0.5B-Instruct"
    assert model.name == "Qwen/Qwen2.5-0.5B-Instruct"
    assert model.path == "Qwen/Qwen2.5-0.5B-Instruct"
    assert model.preload is True  # /readiness waits for it
    assert model.device == "cpu"


def test_model_directory_is_resolved_to_an_absolute_path(tmp_path, monkeypatch):
    (tmp_path / "models" / "stories260K").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    config = build_config(_args(model="models/stories260K/", device="cuda"))
    (model,) = config.models
    assert model.path == str(tmp_path.resolve() / "models" / "stories260K")
    assert model.id == "stories260K"
    assert model.name == "stories260K"
    assert model.device == "cuda"


def test_model_as_the_current_directory_gets_the_directory_name(tmp_path, monkeypatch):
    model_dir = tmp_path / "my-model"
    model_dir.mkdir()
    monkeypatch.chdir(model_dir)
    (model,) = build_config(_args(model=".")).models
    assert model.id == "my-model"
    assert model.path == str(model_dir.resolve())


def test_model_ignores_a_config_toml_in_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "config.toml").write_text(
        '[server]\nport = 9999\n[[models]]\nid="x"\nname="x"\npath="x"\n'
    )
    monkeypatch.chdir(tmp_path)
    config = build_config(_args(model="Org/Model"))
    assert [model.name for model in config.models] == ["Org/Model"]
    assert config.server.port == 3000


def test_model_with_a_config_file_keeps_its_settings(tmp_path):
    path = tmp_path / "server.toml"
    path.write_text('[server]\nport = 8123\n[[models]]\nid = "x"\nname = "x"\npath = "x"\n')
    # argparse makes --config and --model exclusive; build_config still copes with both.
    config = build_config(_args(config=str(path), model="Org/Model"))
    assert config.server.port == 8123
    assert [model.name for model in config.models] == ["Org/Model"]


def test_host_and_port_flags_override_the_config(tmp_path):
    path = tmp_path / "server.toml"
    path.write_text('[server]\nhost = "0.0.0.0"\nport = 8123\n')
    config = build_config(_args(config=str(path), port=9000))
    assert (config.server.host, config.server.port) == ("0.0.0.0", 9000)
    config = build_config(_args(config=str(path), host="127.0.0.2"))
    assert (config.server.host, config.server.port) == ("127.0.0.2", 8123)


def test_config_toml_in_the_working_directory_is_used_by_default(tmp_path, monkeypatch):
    (tmp_path / "config.toml").write_text("[server]\nport = 4321\n")
    monkeypatch.chdir(tmp_path)
    config = build_config(_args())
    assert config.server.port == 4321
    assert config.source == (tmp_path / "config.toml").resolve()


def test_the_built_in_config_is_used_without_any_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = build_config(_args())
    assert config.source is None
    assert [model.id for model in config.models] == ["qwen"]
    assert config.sessions.path == tmp_path.resolve() / "data" / "sessions"


def test_a_bad_config_exits_with_status_2_and_a_message(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text("[server]\nprot = 1\n")
    assert main(["serve", "--config", str(path)]) == 2
    error = capsys.readouterr().err
    assert "unknown key 'server.prot'" in error
    assert str(path) in error


def test_config_and_model_flags_are_exclusive(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--config", "a.toml", "--model", "b"])
    assert exited.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_an_unknown_device_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--model", "x", "--device", "tpu"])
    assert "invalid choice: 'tpu'" in capsys.readouterr().err
