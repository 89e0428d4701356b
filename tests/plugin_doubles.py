"""Plugins for the plugin tests, loaded by dotted path (`tests.plugin_doubles:First`)
exactly as a third-party package's would be."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Literal

from pydantic import Field
from sanic import Request, Sanic
from sanic.response import HTTPResponse

from inferd.backends.base import TokenEvent
from inferd.errors import ApiError, Forbidden, error_response
from inferd.plugins.base import (
    ConfigPath,
    Generation,
    ParsedRequest,
    Plugin,
    PluginConfig,
    app_metrics,
)

HERE = "tests.plugin_doubles"


class RecorderConfig(PluginConfig):
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


class HealthRecorder(Recorder):
    name = "health_recorder"
    sees_health_checks = True


Hook = Literal[
    "on_request",
    "on_response",
    "on_websocket_message",
    "transform_request",
    "transform_output",
    "on_token",
]


class FaultyConfig(PluginConfig):
    fails_in: list[Hook] = Field(default_factory=list)
    paths: list[str] | None = None  # fail only on these paths (None: everywhere)


class Faulty(Plugin):
    """Raises RuntimeError in the hooks its table names; records what it saw."""

    name = "faulty"
    Config = FaultyConfig
    config: FaultyConfig

    def setup(self, app: Sanic) -> None:
        self.seen: list[str] = []
        app.ctx.faulty = self

    def _maybe_fail(self, hook: Hook, path: str | None = None) -> None:
        self.seen.append(hook)
        paths = self.config.paths
        if hook in self.config.fails_in and (paths is None or path in paths):
            raise RuntimeError(f"faulty {hook}")

    async def on_request(self, request: Request) -> None:
        request.ctx.faulty_was_here = True
        self._maybe_fail("on_request", request.path)

    async def on_response(self, request: Request, response: HTTPResponse) -> None:
        response.headers["X-Faulty"] = "yes"
        self._maybe_fail("on_response", request.path)

    async def on_websocket_message(self, request: Request, message: str | bytes) -> None:
        self._maybe_fail("on_websocket_message")

    def transform_request(self, request: Request, parsed: ParsedRequest) -> None:
        if "transform_request" in self.config.fails_in:  # a half-made change, then a crash
            parsed.prompt = "half-made change"
            parsed.messages.clear()
        self._maybe_fail("transform_request")

    def transform_output(self, generation: Generation, text: str, final: bool) -> str:
        self._maybe_fail("transform_output")
        return text.upper()

    def on_token(self, generation: Generation, event: TokenEvent) -> None:
        self._maybe_fail("on_token")


class Refuser(Plugin):
    """Refuses with ApiErrors: the model "forbidden" (403), GET /models/secret (403) and,
    on the way out, any request with an X-Refuse-Late header (409)."""

    name = "refuser"

    async def on_request(self, request: Request) -> None:
        if request.path == "/models/secret":
            raise Forbidden("no peeking")

    async def on_response(self, request: Request, response: HTTPResponse) -> None:
        if "x-refuse-late" in request.headers:
            raise ApiError(409, "changed my mind")

    async def transform_request(self, request: Request, parsed: ParsedRequest) -> None:
        if parsed.model == "forbidden":
            raise Forbidden("that model is not for you")


class Upper(Plugin):
    name = "upper"

    def transform_output(self, generation: Generation, text: str, final: bool) -> str:
        return text.upper()


class StopperConfig(PluginConfig):
    at: str = "!"


class Stopper(Plugin):
    """Ends the generation just before the first `at` (finish_reason content_filter)."""

    name = "stopper"
    Config = StopperConfig
    config: StopperConfig

    def transform_output(self, generation: Generation, text: str, final: bool) -> str:
        if self.config.at in text:
            generation.stop()
            return text[: text.index(self.config.at)]
        return text


class HoldAll(Plugin):
    """Holds every piece back and releases the whole answer at the final call."""

    name = "hold_all"

    def transform_output(self, generation: Generation, text: str, final: bool) -> str:
        held = generation.state.get("hold_all", "") + text
        generation.state["hold_all"] = "" if final else held
        return held if final else ""


class TextRecorder(Plugin):
    """Records what transform_output and on_token saw, and the final flags."""

    name = "text_recorder"

    def setup(self, app: Sanic) -> None:
        app.ctx.text_recorder = self
        self.pieces: list[tuple[str, bool]] = []
        self.tokens: list[str] = []
        self.generations: list[Generation] = []

    def transform_output(self, generation: Generation, text: str, final: bool) -> str:
        self.pieces.append((text, final))
        return text

    def on_token(self, generation: Generation, event: TokenEvent) -> None:
        self.tokens.append(event.text)

    def on_finished(self, generation: Generation) -> None:
        self.generations.append(generation)


class RewriterConfig(PluginConfig):
    model: str | None = None
    prompt_suffix: str = ""
    max_tokens: int | None = None
    replace: bool = False  # return a new ParsedRequest instead of changing it in place
    stateless: bool = False  # drop the chat's session


class Rewriter(Plugin):
    """Rewrites model, prompt or messages, and max_tokens; keeps what it saw."""

    name = "rewriter"
    Config = RewriterConfig
    config: RewriterConfig

    def setup(self, app: Sanic) -> None:
        self.seen: list[ParsedRequest] = []
        self.generations: list[Generation] = []
        app.ctx.rewriter = self

    async def transform_request(
        self, request: Request, parsed: ParsedRequest
    ) -> ParsedRequest | None:
        self.seen.append(dataclasses.replace(parsed))
        changes: dict[str, object] = {}
        if self.config.model is not None:
            changes["model"] = self.config.model
        if self.config.max_tokens is not None:
            cap = self.config.max_tokens
            changes["params"] = dataclasses.replace(parsed.params, max_tokens=cap)
        if parsed.prompt is not None:
            changes["prompt"] = parsed.prompt + self.config.prompt_suffix
        else:
            last = parsed.messages[-1]
            new = dataclasses.replace(last, content=last.content + self.config.prompt_suffix)
            changes["messages"] = [*parsed.messages[:-1], new]
        if self.config.stateless:
            changes["session_id"] = None
        if self.config.replace:
            return dataclasses.replace(parsed, **changes)  # type: ignore[arg-type]
        for field, value in changes.items():
            setattr(parsed, field, value)
        return None

    def on_queued(self, generation: Generation) -> None:
        self.generations.append(generation)


class WrongReturn(Plugin):
    name = "wrong_return"

    def transform_request(self, request: Request, parsed: ParsedRequest) -> ParsedRequest:
        return "not a request"  # type: ignore[return-value]


class AsyncRecorder(Plugin):
    """Every hook async: records the order it ran in (slowly, to prove nothing waits)."""

    name = "async_recorder"

    async def setup(self, app: Sanic) -> None:  # type: ignore[override]
        app.ctx.async_log = self.log = ["setup"]

    async def on_request(self, request: Request) -> None:
        self.log.append("on_request")

    async def on_response(self, request: Request, response: HTTPResponse) -> None:
        self.log.append("on_response")

    async def transform_request(self, request: Request, parsed: ParsedRequest) -> None:
        self.log.append("transform_request")
        if parsed.prompt is not None:
            parsed.prompt += "!"
        else:
            last = parsed.messages[-1]
            parsed.messages[-1] = dataclasses.replace(last, content=last.content + "!")

    async def transform_output(self, generation: Generation, text: str, final: bool) -> str:
        self.log.append("transform_output:final" if final else "transform_output")
        return text.lower()

    async def on_queued(self, generation: Generation) -> None:
        self.log.append("on_queued")

    async def on_first_token(self, generation: Generation) -> None:
        self.log.append("on_first_token")

    async def on_token(self, generation: Generation, event: TokenEvent) -> None:
        await asyncio.sleep(0.001)  # slower than the stream: the lane must keep order
        self.log.append(f"on_token:{event.text}")

    async def on_finished(self, generation: Generation) -> None:
        self.log.append(f"on_finished:{generation.stats.finish_reason}")


class PathsConfig(PluginConfig):
    data: ConfigPath = Path("data.txt")  # defaults resolve too
    more: list[ConfigPath] = Field(default_factory=list)


class WithPaths(Plugin):
    name = "with_paths"
    Config = PathsConfig


class CountingConfig(PluginConfig):
    counter: str = "doubles_requests"


class Counting(Plugin):
    """Counts requests by path, and observes a histogram and a gauge, in the app's registry."""

    name = "counting"
    Config = CountingConfig
    config: CountingConfig

    def setup(self, app: Sanic) -> None:
        metrics = app_metrics(app)
        self.requests = metrics.counter(self.config.counter, "Requests seen", ["path"])
        self.sizes = metrics.histogram("doubles_path_length", "Path lengths", buckets=(5, 50))
        self.last = metrics.gauge("doubles_last_path_length", "Length of the latest path")

    async def on_request(self, request: Request) -> None:
        self.requests.labels(request.path).inc()
        self.sizes.observe(len(request.path))
        self.last.set(len(request.path))


class FailsInInit(Plugin):
    name = "fails_in_init"

    def __init__(self, config: object = None) -> None:
        raise RuntimeError("cannot reach the audit server")


class FailsInSetup(Plugin):
    name = "fails_in_setup"

    def setup(self, app: Sanic) -> None:
        raise RuntimeError("route /metrics is taken")


class FailsInAsyncSetup(Plugin):
    name = "fails_in_async_setup"

    async def setup(self, app: Sanic) -> None:  # type: ignore[override]
        raise RuntimeError("cannot reach the audit server")


class Nameless(Plugin):
    pass


class NotAPlugin:
    name = "not_a_plugin"
