"""Runs the enabled plugins' hooks in configured order.

Requests pass the plugins like the layers of an onion: `on_request` in listed order,
`on_response` in reverse, and only for the plugins whose `on_request` ran (a request
that auth rejects never reaches the rate limiter, in or out). Each hook is called only
on the plugins that override it, so a plugin pays for nothing it does not use -- this
matters for `on_token`, which runs once per token.

The chain is also the engine's GenerationObserver for each request, translating the
engine's events into the plugins' lifecycle hooks. A plugin hook that raises during
generation is logged and skipped: a metrics bug must never cut a user's stream.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sanic import Request, Sanic
from sanic.response import HTTPResponse

from inferd.backends.base import GenerationStats, TokenEvent
from inferd.config import ConfigError
from inferd.plugins.base import Generation, Plugin

log = logging.getLogger("inferd.plugins")

LIFECYCLE = ("on_queued", "on_admitted", "on_first_token", "on_token", "on_finished")
HOOKS = ("on_request", "on_response", "on_websocket_message", *LIFECYCLE)
# request.ctx attribute: how many plugins (in listed order) the request has entered.
_ENTERED = "inferd_plugins_entered"

Hooks = dict[str, list[tuple[int, Plugin]]]


def _overrides(plugin: Plugin, hook: str) -> bool:
    return getattr(type(plugin), hook) is not getattr(Plugin, hook)


class PluginChain:
    def __init__(self, plugins: Sequence[Plugin] = ()) -> None:
        self.plugins = list(plugins)
        self._hooks: Hooks = {
            hook: [(i, p) for i, p in enumerate(self.plugins) if _overrides(p, hook)]
            for hook in HOOKS
        }
        self._hooks["on_response"].reverse()

    def setup(self, app: Sanic) -> None:
        """Each plugin's setup, in order; a failure stops start-up with the plugin named."""
        for plugin in self.plugins:
            try:
                plugin.setup(app)
            except Exception as error:
                raise ConfigError(f"plugin {plugin.name!r} failed to start: {error}") from error

    async def on_request(self, request: Request) -> HTTPResponse | None:
        for index, plugin in self._hooks["on_request"]:
            # Set before the call: a plugin that rejects or raises still sees its response.
            setattr(request.ctx, _ENTERED, index + 1)
            response = await plugin.on_request(request)
            if response is not None:
                return response
        setattr(request.ctx, _ENTERED, len(self.plugins))
        return None

    async def on_response(self, request: Request, response: HTTPResponse) -> None:
        entered = getattr(request.ctx, _ENTERED, 0)
        for index, plugin in self._hooks["on_response"]:
            if index < entered:
                await plugin.on_response(request, response)

    async def on_websocket_message(self, request: Request, message: str | bytes) -> None:
        """Raises the first plugin's ApiError that refuses the message."""
        for _, plugin in self._hooks["on_websocket_message"]:
            await plugin.on_websocket_message(request, message)

    def observe(self, generation: Generation) -> GenerationObserver:
        """An observer for a generation about to be queued (plugins see `on_queued` now)."""
        observer = GenerationObserver(self._hooks, generation)
        observer.each("on_queued")
        return observer


class GenerationObserver:
    """Feeds one generation's engine events to every plugin."""

    def __init__(self, hooks: Hooks, generation: Generation) -> None:
        self._hooks = hooks
        self.generation = generation
        self._seen_token = False

    def each(self, hook: str, *args: object) -> None:
        for _, plugin in self._hooks[hook]:
            try:
                getattr(plugin, hook)(self.generation, *args)
            except Exception:
                log.exception("plugin %s failed in %s", plugin.name, hook)

    def on_admitted(self, stats: GenerationStats) -> None:
        self.generation.stats = stats
        self.each("on_admitted")

    def on_token(self, event: TokenEvent, stats: GenerationStats) -> None:
        self.generation.stats = stats
        if not self._seen_token:
            self._seen_token = True
            self.each("on_first_token")
        self.each("on_token", event)

    def on_finished(self, stats: GenerationStats) -> None:
        self.generation.stats = stats
        self.each("on_finished")
