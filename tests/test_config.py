"""inferd/config.py: typed TOML configuration."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from inferd.app import create_app
from inferd.config import (
    Config,
    ConfigError,
    default_config_text,
    load_config,
    parse_config,
    resolve_path,
    tomllib,
)

MODEL = '[[models]]\nid = "m"\nname = "Org/M"\npath = "Org/M"\n'


def _write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_an_empty_file_gives_the_defaults(tmp_path):
    config = load_config(_write(tmp_path, ""))
    assert config.server.host == "127.0.0.1"
    assert config.server.port == 3000
    assert config.models == []
    assert config.plugins.enabled == ["cors", "metrics", "auth", "rate_limit"]
    assert config.source == tmp_path / "config.toml"


def test_a_full_file_is_read(tmp_path):
    path = _write(
        tmp_path,
        """
        [server]
        port = 8080
        keepalive_interval = 2.5
        [plugins]
        enabled = ["metrics"]
        [[models]]
        id = "qwen"
        name = "Qwen/Qwen2.5-0.5B-Instruct"
        path = "Qwen/Qwen2.5-0.5B-Instruct"
        context_length = 4096
        device = "cuda"
        preload = true
        max_concurrent = 2
        """,
    )
    config = load_config(path)
    assert config.server.port == 8080
    assert config.server.keepalive_interval == 2.5
    assert config.plugins.enabled == ["metrics"]
    (model,) = config.models
    assert (model.id, model.name, model.context_length) == ("qwen", model.path, 4096)
    assert (model.device, model.preload, model.max_concurrent) == ("cuda", True, 2)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[server]\nprot = 3000\n", "server.prot"),
        ("[sessions]\ndir = 'x'\n", "sessions.dir"),
        (MODEL + "devcie = 'cpu'\n", "models.0.devcie"),
        ("[plugins]\nenable = []\n", "plugins.enable"),
        ("port = 3000\n", "port"),
    ],
)
def test_unknown_keys_are_errors_naming_the_key_and_the_file(tmp_path, text, key):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert str(path) in message
    assert f"unknown key '{key}'" in message


def test_an_unknown_table_is_an_error_when_the_app_is_built(tmp_path):
    # Tables other than the core ones belong to plugins; one nobody reads is a typo.
    path = _write(tmp_path, "[sever]\nport = 1\n")
    config = load_config(path)
    with pytest.raises(ConfigError) as caught:
        create_app(config)
    assert "unknown key 'sever'" in str(caught.value)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[server]\nport = 70000\n", "server.port"),
        ("[server]\nport = 'http'\n", "server.port"),
        ("[server]\nkeepalive_interval = 0\n", "server.keepalive_interval"),
        (MODEL + "device = 'tpu'\n", "models.0.device"),
        (MODEL + "max_concurrent = 0\n", "models.0.max_concurrent"),
        (MODEL + "quantization = 'int3'\n", "models.0.quantization"),
        ('[[models]]\nid = "m"\nname = "n"\n', "model 'm': `path` is required"),
        (MODEL + "max_queue = -1\n", "models.0.max_queue"),
        (MODEL + "queue_timeout = 0\n", "models.0.queue_timeout"),
        (MODEL + "prefill_slowdown = 0.5\n", "models.0.prefill_slowdown"),
        (MODEL + "arrival_window_ms = -1\n", "models.0.arrival_window_ms"),
        (
            '[[models]]\nid = "r"\nname = "r"\nbackend = "openai"\nurl = "http://h:1/v1"\n'
            "arrival_window_ms = 5\n",
            "'arrival_window_ms' does not apply",
        ),
        ("[server]\nlog_format = 'xml'\n", "server.log_format"),
        ("[server]\nmax_connections = 0\n", "server.max_connections"),
        ("[server]\nheader_timeout = 20\nbody_timeout = 10\n", "body_timeout"),
        ("[sessions]\nttl = 0\n", "sessions.ttl"),
        ("[sessions]\nmax_messages = 1\n", "sessions.max_messages"),
    ],
)
def test_invalid_values_are_errors_naming_the_key(tmp_path, text, fragment):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert fragment in str(caught.value)
    assert str(path) in str(caught.value)


def test_operational_defaults(tmp_path):
    config = load_config(_write(tmp_path, MODEL))
    server, sessions, (model,) = config.server, config.sessions, config.models
    assert (server.drain_timeout, server.header_timeout, server.body_timeout) == (30, 10, 30)
    assert (server.max_connections, server.log_format) == (512, "text")
    assert (sessions.ttl, sessions.max_messages, sessions.timeout) == (None, 500, 5)
    # Every peer loads at start: /readiness is only "ready" once models can serve.
    assert model.preload is True
    assert (model.max_concurrent, model.max_queue, model.queue_limit) == (8, None, 32)
    assert model.queue_timeout == 30


def test_a_model_id_or_name_used_twice_is_an_error(tmp_path):
    path = _write(tmp_path, MODEL + MODEL.replace('id = "m"', 'id = "other"'))
    with pytest.raises(ConfigError, match="'Org/M' is used twice"):
        load_config(path)


def test_invalid_toml_is_an_error_naming_the_file(tmp_path):
    path = _write(tmp_path, "[server\n")
    with pytest.raises(ConfigError, match="invalid TOML") as caught:
        load_config(path)
    assert str(path) in str(caught.value)


def test_a_missing_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.toml")


def test_relative_paths_resolve_against_the_config_files_folder(tmp_path, monkeypatch):
    folder = tmp_path / "etc"
    (folder / "models" / "tiny").mkdir(parents=True)
    path = _write(
        folder,
        """
        [sessions]
        path = "state/sessions"
        [[models]]
        id = "tiny"
        name = "tiny"
        path = "models/tiny"
        [[models]]
        id = "dotted"
        name = "dotted"
        path = "./not-there-yet"
        """,
    )
    monkeypatch.chdir(tmp_path)  # not the config's folder
    config = load_config(Path("etc/config.toml"))
    assert config.sessions.path == folder.resolve() / "state" / "sessions"
    assert config.models[0].path == str(folder.resolve() / "models" / "tiny")
    # An explicitly relative path is a path even before it exists.
    assert config.models[1].path == str(folder.resolve() / "not-there-yet")
    assert config.source == path.resolve()


def test_a_hub_id_is_kept_as_is(tmp_path):
    config = load_config(_write(tmp_path, MODEL))
    assert config.models[0].path == "Org/M"


def test_absolute_paths_are_kept(tmp_path):
    target = tmp_path / "elsewhere"
    path = _write(tmp_path, f'[sessions]\npath = "{target}"\n')
    assert load_config(path).sessions.path == target


def test_plugin_tables_are_kept_for_the_plugins(tmp_path):
    config = load_config(_write(tmp_path, "[auth]\nenabled = true\napi_keys = ['k']\n"))
    assert config.section("auth") == {"enabled": True, "api_keys": ["k"]}
    assert config.section("rate_limit") == {}


def test_parse_config_without_a_file_resolves_against_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = parse_config({"sessions": {"path": "s"}})
    assert config.sessions.path == tmp_path.resolve() / "s"
    with pytest.raises(ConfigError) as caught:
        parse_config({"server": {"x": 1}})
    assert str(caught.value) == "<config>: unknown key 'server.x'"


def test_the_default_config_is_valid():
    config = parse_config(tomllib.loads(default_config_text()))
    assert isinstance(config, Config)
    assert config.models  # ships with a model entry
    assert config.server.port == 3000


def test_config_objects_are_immutable(tmp_path):
    config = load_config(_write(tmp_path, ""))
    with pytest.raises(ValueError, match="frozen"):
        config.server.port = 1


def test_resolve_path_and_the_config_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = tmp_path / "etc"
    assert resolve_path(base, "data/x") == base / "data/x"
    assert resolve_path(base, "/abs") == Path("/abs")
    assert resolve_path(base, "~/y") == Path.home() / "y"
    assert parse_config({}, source=base / "config.toml").folder == base
    assert parse_config({}).folder == tmp_path


def test_an_idle_model_gathers_arrivals_on_a_cpu_only_unless_told(tmp_path):
    (model,) = load_config(_write(tmp_path, MODEL)).models
    assert model.arrival_window("cpu") == 0.005  # prompt steps take tenths of a second
    assert model.arrival_window("cuda") == model.arrival_window("metal") == 0.0
    (off,) = load_config(_write(tmp_path, MODEL + "arrival_window_ms = 0\n")).models
    assert off.arrival_window("cpu") == 0.0
    (set_,) = load_config(_write(tmp_path, MODEL + "arrival_window_ms = 20\n")).models
    assert set_.arrival_window("metal") == 0.02
