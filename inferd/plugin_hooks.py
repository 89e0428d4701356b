"""The hooks each enabled plugin overrides, looked up once when the chain is built.

A hook is called only on the plugins that override it, through a bound method found
once, so a plugin pays for nothing it does not use -- this matters for `on_token` and
`transform_output`, which run once per piece of text.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from inferd.plugins.base import Plugin

LIFECYCLE = ("on_queued", "on_admitted", "on_first_token", "on_token", "on_finished")
HOOKS = (
    "on_request",
    "on_response",
    "on_websocket_message",
    "transform_request",
    "transform_output",
    *LIFECYCLE,
)


@dataclass(frozen=True, slots=True)
class Hook:
    """One plugin's implementation of one hook."""

    index: int  # the plugin's position in [plugins] enabled
    plugin: Plugin
    call: Callable[..., Any]  # the bound method
    is_async: bool  # `async def`: await what `call` returns
    fail_closed: bool  # an unexpected exception refuses the request

    @property
    def plugin_name(self) -> str:
        return self.plugin.name

    async def run(self, *args: Any) -> Any:
        """Call the hook, awaiting it if it is async."""
        result = self.call(*args)
        return await result if self.is_async else result


def fails_closed(plugin: Plugin) -> bool:
    """The plugin's table (`failure_mode = ...`) overrides the class's default."""
    mode = getattr(plugin.config, "failure_mode", None) or plugin.failure_mode
    return mode == "fail_closed"


def _overrides(plugin: Plugin, hook: str) -> bool:
    return getattr(type(plugin), hook) is not getattr(Plugin, hook)


HookTable = dict[str, list[Hook]]


def hook_table(plugins: Sequence[Plugin]) -> HookTable:
    """For each hook name, the plugins that override it, in listed order."""
    table: HookTable = {}
    for name in HOOKS:
        table[name] = []
        for index, plugin in enumerate(plugins):
            if _overrides(plugin, name):
                method = getattr(plugin, name)
                is_async = inspect.iscoroutinefunction(method)
                table[name].append(Hook(index, plugin, method, is_async, fails_closed(plugin)))
    return table
