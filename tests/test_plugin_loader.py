"""inferd/plugin_loader.py: finding, configuring and instantiating plugins at start-up.

The plugin classes are in tests/plugin_doubles.py, loaded by dotted path exactly as a
third-party package's would be.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

import pytest

from inferd.config import ConfigError, parse_config
from inferd.plugin_loader import BUILTIN, load_plugins, resolve_plugin_class
from inferd.testing.fakes import make_app
from tests.plugin_doubles import HERE


def recorder_app(tmp_path, enabled, **sections):
    return make_app(tmp_path, plugins={"enabled": enabled}, **sections)


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
        # (Installed packages' plugins, e.g. the example's guardrail and cost, are known too.)
        ("nope", "unknown plugin 'nope'; known plugins: auth, cors, (.+, )?metrics, rate_limit"),
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
        ({"first": {"failure_mode": "fail_sideways"}}, "first.failure_mode: Input should be"),
        ({"nosuch": {"x": 1}}, "unknown key 'nosuch' \\(no enabled plugin reads it\\)"),
    ],
)
def test_plugin_config_tables_are_validated_at_start_up(tmp_path, sections, message):
    with pytest.raises(ConfigError, match=message):
        recorder_app(tmp_path, [f"{HERE}:First"], **sections)


@pytest.mark.parametrize("name", ["auth", "rate_limit", "cors", "metrics"])
def test_a_table_that_switches_on_an_unlisted_plugin_is_an_error(tmp_path, name):
    # [auth] enabled = true without "auth" in the list used to start with no auth at all.
    with pytest.raises(ConfigError) as caught:
        recorder_app(tmp_path, [f"{HERE}:First"], **{name: {"enabled": True}})
    assert str(caught.value) == (
        f"{tmp_path / 'config.toml'}: [{name}] says enabled = true, but {name!r} is not in "
        f"[plugins] enabled, so it would not run: add {name!r} to that list, or remove "
        f"enabled = true from [{name}]"
    )


def test_an_installed_plugins_table_counts_as_known(tmp_path, monkeypatch):
    fake = [EntryPoint(name="first", value=f"{HERE}:First", group="inferd.plugins")]
    monkeypatch.setattr("inferd.plugin_loader.entry_points", lambda group: fake)
    app = recorder_app(tmp_path, [], first={"reject": "/x"})  # installed, not listed: ignored
    assert app.ctx.plugins.plugins == []
    with pytest.raises(ConfigError, match=r"\[first\] says enabled = true"):
        recorder_app(tmp_path, [], first={"enabled": True})


def test_a_plugin_that_is_off_is_not_validated(tmp_path):
    # Listed but switched off in its table, or a built-in that is not listed.
    app = recorder_app(
        tmp_path,
        [f"{HERE}:First", "auth"],
        first={"enabled": False, "bogus": 1},
        auth={"enabled": False, "api_keys": "not even a list"},
        rate_limit={"requests_per_minute": -5},
    )
    assert app.ctx.plugins.plugins == []


def test_config_paths_resolve_against_the_config_files_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "etc"
    data = {
        "plugins": {"enabled": [f"{HERE}:WithPaths"]},
        "with_paths": {"more": ["lists/a.txt", "/abs/b.txt", "~/c.txt"]},
    }
    [plugin] = load_plugins(parse_config(data, source=folder / "config.toml"))
    assert plugin.config.data == folder / "data.txt"  # the default resolves too
    assert plugin.config.more == [folder / "lists/a.txt", Path("/abs/b.txt"), Path.home() / "c.txt"]
    [plugin] = load_plugins(parse_config(data))  # no file: the working directory
    assert plugin.config.data == tmp_path / "data.txt"
