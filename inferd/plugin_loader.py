"""Finding, configuring and instantiating the plugins that config.toml enables.

A plugin is named either by a built-in or entry-point name (group `inferd.plugins`) or
by a dotted `package.module:Class` path. Every problem -- an unknown name, an import
error, a bad config table, a table no plugin claims, a table that switches on a plugin
the list leaves out, a plugin listed twice, a plugin whose constructor raises -- is a
ConfigError at start-up, never a surprise at the first request (PluginChain.setup does
the same for each plugin's `setup`). A plugin that is off -- not listed, or listed with
`enabled = false` in its table -- is neither validated nor instantiated.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from pydantic import ValidationError

from inferd.config import CONFIG_DIR, Config, ConfigError
from inferd.plugins.base import Plugin, PluginConfig

ENTRY_POINT_GROUP = "inferd.plugins"
BUILTIN = {
    "auth": "inferd.plugins.auth:AuthPlugin",
    "rate_limit": "inferd.plugins.rate_limit:RateLimitPlugin",
    "metrics": "inferd.plugins.metrics:MetricsPlugin",
    "cors": "inferd.plugins.cors:CorsPlugin",
}


def _import(target: str) -> type:
    module_name, _, attribute = target.partition(":")
    if not attribute:
        raise ConfigError(f"plugin {target!r}: expected a built-in name or 'package.module:Class'")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attribute)
    except Exception as error:
        raise ConfigError(f"plugin {target!r} could not be imported: {error}") from None


def resolve_plugin_class(spec: str) -> type[Plugin]:
    """The class a plugin spec names: built-in, entry point, or dotted path."""
    if ":" in spec:
        cls = _import(spec)
    elif spec in BUILTIN:
        cls = _import(BUILTIN[spec])
    else:
        found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == spec]
        if not found:
            known = sorted({*BUILTIN, *(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))})
            raise ConfigError(
                f"unknown plugin {spec!r}; known plugins: {', '.join(known)}; "
                "a plugin class in a module is named 'package.module:Class'"
            )
        try:
            cls = found[0].load()
        except Exception as error:
            raise ConfigError(f"plugin {spec!r} could not be loaded: {error}") from None
    if not (isinstance(cls, type) and issubclass(cls, Plugin)):
        raise ConfigError(f"plugin {spec!r} is not a subclass of inferd.plugins.base.Plugin")
    if not cls.name:
        raise ConfigError(f"plugin {spec!r} has no `name` (its config table's name)")
    return cls


def _settings(cls: type[Plugin], config: Config) -> PluginConfig:
    """The plugin's `[<name>]` table, validated by its own Config model."""
    label = str(config.source) if config.source else "<config>"
    try:
        context = {CONFIG_DIR: config.folder}  # for ConfigPath fields
        return cls.Config.model_validate(config.section(cls.name), context=context)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            key = ".".join([cls.name, *(str(part) for part in item["loc"])])
            if item["type"] == "extra_forbidden":
                problems.append(f"unknown key {key!r}")
            else:
                problems.append(f"{key}: {item['msg']}")
        raise ConfigError(f"{label}: " + "; ".join(problems)) from None


def _instantiate(cls: type[Plugin], settings: PluginConfig) -> Plugin:
    try:
        return cls(settings)
    except Exception as error:
        raise ConfigError(f"plugin {cls.name!r} failed to start: {error}") from None


def _check_tables(config: Config, listed: set[str]) -> None:
    """Every table belongs to a known plugin, and none switches on one left unlisted."""
    label = str(config.source) if config.source else "<config>"
    known = listed | set(BUILTIN)
    if set(config.plugin_sections) - known:  # scanning installed packages takes a while
        known |= {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    for section, table in config.plugin_sections.items():
        if section not in known:
            raise ConfigError(f"{label}: unknown key {section!r} (no enabled plugin reads it)")
        if section not in listed and table.get("enabled") is True:
            # e.g. [auth] enabled = true with auth missing from the list: no auth at all.
            raise ConfigError(
                f"{label}: [{section}] says enabled = true, but {section!r} is not in "
                f"[plugins] enabled, so it would not run: add {section!r} to that list, "
                f"or remove enabled = true from [{section}]"
            )


def load_plugins(config: Config) -> list[Plugin]:
    """Instantiate the enabled plugins in order; reject config tables nobody reads."""
    classes = [resolve_plugin_class(spec) for spec in config.plugins.enabled]
    names = [cls.name for cls in classes]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"plugin {name!r} is listed twice in [plugins] enabled")
    _check_tables(config, set(names))
    plugins = []
    for cls in classes:
        if config.section(cls.name).get("enabled") is False:
            continue  # switched off: its other keys are not checked
        settings = _settings(cls, config)
        if getattr(settings, "enabled", True):
            plugins.append(_instantiate(cls, settings))
    return plugins
