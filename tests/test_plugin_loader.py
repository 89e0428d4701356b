"""inferd/plugin_loader.py and inferd/plugin_chain.py: finding, configuring and ordering plugins.

The plugin classes below are loaded by dotted path (`tests.test_plugin_loader:First`),
exactly as a third-party package's would be.
"""

from __future__ import annotations

import logging
from importlib.metadata import EntryPoint, entry_points

import pytest
from sanic import Request, Sanic
from sanic.response import HTTPResponse

from inferd.backends.base import TokenEvent
from inferd.config import ConfigError
from inferd.errors import error_response
from inferd.plugin_loader import BUILTIN, resolve_plugin_class
from inferd.plugins.base import Generation, Plugin, PluginConfig
from inferd.testing.fakes import REPLY, make_app
from inferd.testing.live import live_server
from tests.plugin_clients import TRANSPORTS, generate

HERE = "tests.test_plugin_loader"
COMPLETION = {"model": "fake", "prompt": "hi"}


class RecorderConfig(PluginConfig):
    enabled: bool = True
    reject: str | None = None  # a path this plugin answers with 403


class Recorder(Plugin):
    """Appends "<name>.<hook>" to app.ctx.plugin_log for every hook it sees."""

    Config = RecorderConfig
    config: RecorderConfig

    def setup(self, app: Sanic) -> None:
        if not hasattr(app.ctx, "plugin_log"):
            app.ctx.plugin_log = []
        self.log: list[str] = app.ctx.plugin_log

    async def on_request(self, request: Request) -> HTTPResponse | None:
        self.log.append(f"{self.name}.on_request")
        if request.path == self.config.reject:
            return error_response(403, f"{self.name} says no")
        return None

    async def on_response(self, request: Request, response: HTTPResponse) -> None:
        self.log.append(f"{self.name}.on_response")

    def on_queued(self, generation: Generation) -> None:
        self.log.append(f"{self.name}.on_queued")

    def on_admitted(self, generation: Generation) -> None:
        self.log.append(f"{self.name}.on_admitted")

    def on_first_token(self, generation: Generation) -> None:
        self.log.append(f"{self.name}.on_first_token")

    def on_token(self, generation: Generation, event: TokenEvent) -> None:
        self.log.append(f"{self.name}.on_token")

    def on_finished(self, generation: Generation) -> None:
        self.log.append(f"{self.name}.on_finished:{generation.stats.finish_reason}")


class First(Recorder):
    name = "first"


class Second(Recorder):
    name = "second"


class Boom(Plugin):
    """Fails in every lifecycle hook; generation must go on regardless."""

    name = "boom"

    def on_first_token(self, generation: Generation) -> None:
        raise RuntimeError("boom")

    def on_token(self, generation: Generation, event: TokenEvent) -> None:
        raise RuntimeError("boom")

    def on_finished(self, generation: Generation) -> None:
        raise RuntimeError("boom")


class FailsInInit(Plugin):
    name = "fails_in_init"

    def __init__(self, config: object = None) -> None:
        raise RuntimeError("cannot reach the audit server")


class FailsInSetup(Plugin):
    name = "fails_in_setup"

    def setup(self, app: Sanic) -> None:
        raise RuntimeError("route /metrics is taken")


class Nameless(Plugin):
    pass


class NotAPlugin:
    name = "not_a_plugin"


def recorder_app(tmp_path, enabled, **sections):
    return make_app(tmp_path, plugins={"enabled": enabled}, **sections)


def without_tokens(log: list[str]) -> list[str]:
    return [entry for entry in log if not entry.endswith(".on_token")]


async def test_hooks_run_in_order_requests_in_responses_out(tmp_path):
    app = recorder_app(tmp_path, [f"{HERE}:First", "metrics", f"{HERE}:Second"])
    _, response = await app.asgi_client.post("/completions", json=COMPLETION)
    assert response.json["text"] == REPLY
    log = app.ctx.plugin_log
    assert without_tokens(log) == [
        "first.on_request",
        "second.on_request",
        "first.on_queued",
        "second.on_queued",
        "first.on_admitted",
        "second.on_admitted",
        "first.on_first_token",
        "second.on_first_token",
        "first.on_finished:stop",
        "second.on_finished:stop",
        "second.on_response",
        "first.on_response",
    ]
    assert log.count("first.on_token") == log.count("second.on_token") == len(REPLY)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_the_lifecycle_is_the_same_on_every_transport(tmp_path, transport):
    app = recorder_app(tmp_path, [f"{HERE}:First"])
    async with live_server(app) as base:
        reply = await generate(base, transport)
    assert reply.text == REPLY
    lifecycle = [e for e in without_tokens(app.ctx.plugin_log) if "on_re" not in e]
    assert lifecycle == [
        "first.on_queued",
        "first.on_admitted",
        "first.on_first_token",
        "first.on_finished:stop",
    ]
    assert app.ctx.plugin_log.count("first.on_token") == len(REPLY)
    # WebSocket upgrades skip response middleware; the handshake passes on_request.
    assert app.ctx.plugin_log[0] == "first.on_request"
    assert ("first.on_response" in app.ctx.plugin_log) == (transport != "websocket")


async def test_a_rejection_skips_later_plugins_in_and_out(tmp_path):
    app = recorder_app(tmp_path, [f"{HERE}:First", f"{HERE}:Second"], first={"reject": "/models"})
    _, response = await app.asgi_client.get("/models")
    assert (response.status, response.json) == (403, {"error": "first says no"})
    assert app.ctx.plugin_log == ["first.on_request", "first.on_response"]


async def test_a_later_rejection_still_passes_earlier_plugins_on_the_way_out(tmp_path):
    app = recorder_app(tmp_path, [f"{HERE}:First", f"{HERE}:Second"], second={"reject": "/models"})
    _, response = await app.asgi_client.get("/models")
    assert response.status == 403
    assert app.ctx.plugin_log == [
        "first.on_request",
        "second.on_request",
        "second.on_response",
        "first.on_response",
    ]


async def test_a_failing_lifecycle_hook_is_logged_and_the_stream_goes_on(tmp_path, caplog):
    app = recorder_app(tmp_path, [f"{HERE}:Boom", f"{HERE}:First"])
    with caplog.at_level(logging.ERROR, logger="inferd.plugins"):
        _, response = await app.asgi_client.post("/completions", json=COMPLETION)
    assert response.json["text"] == REPLY
    assert "first.on_finished:stop" in app.ctx.plugin_log  # later plugins still ran
    assert "plugin boom failed in on_token" in caplog.text


def test_builtins_resolve_and_are_registered_entry_points():
    for name, target in BUILTIN.items():
        assert resolve_plugin_class(name).__module__ == target.partition(":")[0]
    installed = {ep.name: ep.value for ep in entry_points(group="inferd.plugins")}
    assert {name: installed.get(name) for name in BUILTIN} == BUILTIN


async def test_a_plugin_found_through_the_entry_point_group(tmp_path, monkeypatch):
    fake = [EntryPoint(name="recorder", value=f"{HERE}:First", group="inferd.plugins")]
    monkeypatch.setattr("inferd.plugin_loader.entry_points", lambda group: fake)
    app = recorder_app(tmp_path, ["recorder"])
    await app.asgi_client.get("/models")
    assert app.ctx.plugin_log == ["first.on_request", "first.on_response"]


def test_a_plugin_switched_off_in_its_table_is_not_in_the_chain(tmp_path):
    app = recorder_app(tmp_path, [f"{HERE}:First", f"{HERE}:Second"], first={"enabled": False})
    assert [plugin.name for plugin in app.ctx.plugins.plugins] == ["second"]


def test_no_plugins_at_all(tmp_path):
    app = recorder_app(tmp_path, [])
    assert app.ctx.plugins.plugins == []


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nope", "unknown plugin 'nope'; known plugins: auth, cors, metrics, rate_limit"),
        ("no_such_package.module:Plugin", "could not be imported: No module named"),
        (f"{HERE}:Missing", "could not be imported"),
        (f"{HERE}:NotAPlugin", "is not a subclass of inferd.plugins.base.Plugin"),
        (f"{HERE}:Nameless", "has no `name`"),
        (f"{HERE}:FailsInInit", "'fails_in_init' failed to start: cannot reach the audit server"),
        (f"{HERE}:FailsInSetup", "'fails_in_setup' failed to start: route /metrics is taken"),
        (HERE, "unknown plugin .*; a plugin class in a module is named 'package.module:Class'"),
    ],
)
def test_a_broken_plugin_is_rejected_at_start_up(tmp_path, spec, message):
    with pytest.raises(ConfigError, match=message):
        recorder_app(tmp_path, [spec])


def test_an_entry_point_that_fails_to_load_is_rejected_at_start_up(tmp_path, monkeypatch):
    fake = [EntryPoint(name="broken", value="no_such_package:Plugin", group="inferd.plugins")]
    monkeypatch.setattr("inferd.plugin_loader.entry_points", lambda group: fake)
    with pytest.raises(ConfigError, match="plugin 'broken' could not be loaded"):
        recorder_app(tmp_path, ["broken"])


def test_a_plugin_listed_twice_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="'metrics' is listed twice"):
        recorder_app(tmp_path, ["metrics", "metrics"])


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"first": {"bogus": 1}}, "unknown key 'first.bogus'"),
        ({"first": {"reject": 5}}, "first.reject: Input should be a valid string"),
        ({"nosuch": {"x": 1}}, "unknown key 'nosuch' \\(no enabled plugin reads it\\)"),
        # A built-in's table is checked even when the built-in is not listed.
        ({"auth": {"api_key": "x"}}, "unknown key 'auth.api_key'"),
    ],
)
def test_plugin_config_tables_are_validated_at_start_up(tmp_path, sections, message):
    with pytest.raises(ConfigError, match=message):
        recorder_app(tmp_path, [f"{HERE}:First"], **sections)
