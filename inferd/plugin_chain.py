"""Runs the enabled plugins' hooks in configured order.

The chain is also the engine's GenerationObserver for each request, translating the
engine's events into the plugins' lifecycle hooks. A plugin hook that raises during
generation is logged and skipped: a metrics bug must never cut a user's stream.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sanic import Request
from sanic.response import HTTPResponse

from inferd.backends.base import GenerationStats, TokenEvent
from inferd.plugins.base import Generation, Plugin

log = logging.getLogger("inferd.plugins")


class PluginChain:
    def __init__(self, plugins: Sequence[Plugin] = ()) -> None:
        self.plugins = list(plugins)

    async def on_request(self, request: Request) -> HTTPResponse | None:
        for plugin in self.plugins:
            response = await plugin.on_request(request)
            if response is not None:
                return response
        return None

    async def on_response(self, request: Request, response: HTTPResponse) -> None:
        for plugin in self.plugins:
            await plugin.on_response(request, response)

    def observe(self, generation: Generation) -> GenerationObserver:
        return GenerationObserver(self.plugins, generation)


class GenerationObserver:
    """Feeds one generation's engine events to every plugin."""

    def __init__(self, plugins: Sequence[Plugin], generation: Generation) -> None:
        self._plugins = plugins
        self.generation = generation
        self._seen_token = False

    def _each(self, hook: str, *args: object) -> None:
        for plugin in self._plugins:
            try:
                getattr(plugin, hook)(self.generation, *args)
            except Exception:
                log.exception("plugin %s failed in %s", plugin.name, hook)

    def on_admitted(self, stats: GenerationStats) -> None:
        self.generation.stats = stats
        self._each("on_admitted")

    def on_token(self, event: TokenEvent, stats: GenerationStats) -> None:
        self.generation.stats = stats
        if not self._seen_token:
            self._seen_token = True
            self._each("on_first_token")
        self._each("on_token", event)

    def on_finished(self, stats: GenerationStats) -> None:
        self.generation.stats = stats
        self._each("on_finished")
