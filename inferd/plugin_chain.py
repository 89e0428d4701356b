"""Runs the enabled plugins' hooks in configured order, and contains their failures.

Requests pass the plugins like the layers of an onion: `on_request` in listed order,
`on_response` in reverse, and only for the plugins whose `on_request` ran (a request
that auth rejects never reaches the rate limiter, in or out). /health and /readiness
pass only the plugins that ask to see them (`Plugin.sees_health_checks`), so a broken
plugin never makes a healthy instance look dead.

An ApiError a hook raises is a deliberate answer: the client gets its status and
message. Any other exception is a plugin bug: it is logged (rate-limited), and the
plugin's failure mode decides -- "fail_closed" refuses the request with a 500,
"fail_open" goes on as if the plugin were not there. Either way the plugins before it
still see the response on the way out.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
from collections.abc import Sequence

from sanic import Request, Sanic
from sanic.response import HTTPResponse

from inferd.config import ConfigError
from inferd.errors import ApiError, InternalError, error_response, handle_exception, request_id
from inferd.plugin_failures import FailureLog
from inferd.plugin_hooks import Hook, hook_table
from inferd.plugin_observer import BackgroundHooks, GenerationObserver
from inferd.plugins.base import Generation, ParsedRequest, Plugin

log = logging.getLogger("inferd.plugins")

HEALTH_CHECKS = frozenset({"/health", "/readiness"})
# request.ctx attributes: how many plugins (in listed order) the request has entered,
# and the positions of those skipped after a fail_open failure.
_ENTERED = "inferd_plugins_entered"
_SKIPPED = "inferd_plugins_skipped"
DRAIN_TIMEOUT = 10.0


def refusal(request: Request, hook: Hook) -> str:
    return (
        f"request refused: server plugin {hook.plugin_name!r} failed "
        f"(request id {request_id(request)})"
    )


class PluginChain:
    def __init__(self, plugins: Sequence[Plugin] = ()) -> None:
        self.plugins = list(plugins)
        self.failures = FailureLog()
        self.background = BackgroundHooks()
        self.hooks = hook_table(self.plugins)
        self.hooks["on_response"].reverse()
        self._health_hooks = {
            name: [hook for hook in self.hooks[name] if hook.plugin.sees_health_checks]
            for name in ("on_request", "on_response")
        }

    def setup(self, app: Sanic) -> None:
        """Each plugin's setup, in order; a failure stops start-up with the plugin named.

        An `async def setup` runs before the server starts serving."""
        for plugin in self.plugins:
            if inspect.iscoroutinefunction(plugin.setup):
                app.before_server_start(_async_setup(plugin))
                continue
            try:
                plugin.setup(app)
            except Exception as error:
                raise ConfigError(f"plugin {plugin.name!r} failed to start: {error}") from error

        @app.before_server_stop
        async def finish_background_hooks(app: Sanic) -> None:
            try:
                await self.background.drain(DRAIN_TIMEOUT)
            except asyncio.TimeoutError:
                log.error("async plugin hooks still running after %.0f s", DRAIN_TIMEOUT)

    def _http_hooks(self, request: Request, name: str) -> list[Hook]:
        return self._health_hooks[name] if request.path in HEALTH_CHECKS else self.hooks[name]

    async def on_request(self, request: Request) -> HTTPResponse | None:
        for hook in self._http_hooks(request, "on_request"):
            # Set before the call: a plugin that rejects or raises still sees its response.
            setattr(request.ctx, _ENTERED, hook.index + 1)
            try:
                response = await hook.run(request)
            except ApiError as error:
                return handle_exception(request, error)
            except Exception as error:
                self.failures.record(hook.plugin_name, "on_request", error)
                if hook.fail_closed:
                    return error_response(500, refusal(request, hook))
                skipped = getattr(request.ctx, _SKIPPED, set())
                setattr(request.ctx, _SKIPPED, skipped | {hook.index})
                continue
            if response is not None:
                return response
        setattr(request.ctx, _ENTERED, len(self.plugins))
        return None

    async def on_response(self, request: Request, response: HTTPResponse) -> HTTPResponse | None:
        """Returns a replacement when a plugin's failure (or ApiError) changes the answer."""
        entered = getattr(request.ctx, _ENTERED, 0)
        skipped = getattr(request.ctx, _SKIPPED, ())
        replacement: HTTPResponse | None = None
        for hook in self._http_hooks(request, "on_response"):
            if hook.index >= entered or hook.index in skipped:
                continue
            try:
                await hook.run(request, replacement or response)
            except ApiError as error:
                replacement = handle_exception(request, error)
            except Exception as error:
                self.failures.record(hook.plugin_name, "on_response", error)
                if hook.fail_closed:
                    replacement = error_response(500, refusal(request, hook))
        return replacement

    async def on_websocket_message(self, request: Request, message: str | bytes) -> None:
        """Raises the ApiError of the first plugin that refuses the message."""
        for hook in self.hooks["on_websocket_message"]:
            try:
                await hook.run(request, message)
            except ApiError:
                raise
            except Exception as error:
                self.failures.record(hook.plugin_name, "on_websocket_message", error)
                if hook.fail_closed:
                    raise InternalError(refusal(request, hook)) from None

    async def transform_request(self, request: Request, parsed: ParsedRequest) -> ParsedRequest:
        """The request after every plugin's transform_request, in listed order.

        Each plugin works on its own copy, so one that fails open leaves no half-made
        change behind."""
        for hook in self.hooks["transform_request"]:
            draft = dataclasses.replace(parsed, messages=list(parsed.messages))
            try:
                result = await hook.run(request, draft)
                if result is not None and not isinstance(result, ParsedRequest):
                    raise TypeError(
                        f"transform_request returned {type(result).__name__}, "
                        "not a ParsedRequest or None"
                    )
                _check(result if result is not None else draft)
            except ApiError:
                raise
            except Exception as error:
                self.failures.record(hook.plugin_name, "transform_request", error)
                if hook.fail_closed:
                    raise InternalError(refusal(request, hook)) from None
                continue
            parsed = result if result is not None else draft
        return parsed

    def observe(self, generation: Generation) -> GenerationObserver:
        """An observer for a generation about to be queued (plugins see `on_queued` now)."""
        observer = GenerationObserver(self.hooks, generation, self.failures, self.background)
        observer.each("on_queued")
        return observer


def _check(parsed: ParsedRequest) -> None:
    """What generation relies on: a completion has a prompt, a chat has messages (or,
    on /v1, a system prompt alone). /v1's endpoints count as theirs: "v1.chat" is a chat."""
    if parsed.endpoint in ("completions", "v1.completions"):
        if not isinstance(parsed.prompt, str):
            raise ValueError("transform_request left a completion request without a prompt")
    elif not (parsed.messages or parsed.system_prompt is not None):
        raise ValueError("transform_request left a chat request without messages")


def _async_setup(plugin: Plugin):
    async def setup(app: Sanic) -> None:
        try:
            await plugin.setup(app)  # type: ignore[misc]
        except Exception as error:
            raise ConfigError(f"plugin {plugin.name!r} failed to start: {error}") from error

    return setup
