"""The plugin API: what a plugin can see and do on the request path.

A plugin is a class with a `name`, an optional pydantic `Config` for its own
config.toml table (`[<name>]`), and any of the hooks below. inferd calls the hooks of
the enabled plugins in the order config.toml lists them (docs/plugins.md is the guide):

- `setup(app)` once at start-up: add routes, listeners, metrics; raise to refuse to start.
- `on_request(request)` before the route; return a response (or raise an ApiError) to
  reject the request. WebSocket handshakes pass through it too.
- `on_response(request, response)` after the route, in reverse order, only for plugins
  whose `on_request` ran.
- `on_websocket_message(request, message)` for each message a WebSocket client sends;
  raise an `inferd.errors.ApiError` to refuse it.
- `transform_request(request, parsed)` for each generation, before tokenisation: change
  the ParsedRequest (model, prompt or messages, sampling, session) or refuse it.
- `transform_output(generation, text, final)` for each piece of generated text: return
  what the client gets; `generation.stop(reason)` ends the generation.
- `on_queued`, `on_admitted`, `on_first_token`, `on_token`, `on_finished`: the
  generation lifecycle, observed, the same for JSON, SSE and WebSocket traffic.

Every hook but `setup` may be `def` or `async def`. Hooks run on the event loop: keep
them short and never block.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from inferd.app_metrics import AppMetrics, app_metrics
from inferd.backends.base import GenerationStats, TokenEvent
from inferd.config import ConfigPath
from inferd.parsed_request import ParsedRequest, Transport

if TYPE_CHECKING:
    from sanic import Request, Sanic
    from sanic.response import HTTPResponse

__all__ = [
    "AppMetrics",
    "ConfigPath",
    "FailureMode",
    "Generation",
    "ParsedRequest",
    "Plugin",
    "PluginConfig",
    "StopReason",
    "Transport",
    "app_metrics",
]

# What a plugin's unexpected exception does: refuse the request, or skip the plugin.
FailureMode = Literal["fail_closed", "fail_open"]
# Reasons a plugin may end a generation with (OpenAI's finish_reason vocabulary).
StopReason = Literal["content_filter", "stop", "length"]


class PluginConfig(BaseModel):
    """Base for plugin config tables: unknown keys are errors.

    `enabled = false` keeps the plugin out of the chain (and its table is not checked);
    `failure_mode` overrides the plugin's `failure_mode` default. Defaults are validated
    like given values, so a `ConfigPath` default resolves against the config's folder.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    enabled: bool = True
    failure_mode: FailureMode | None = None


@dataclass(slots=True)
class Generation:
    """One generation as plugins see it."""

    request: Request  # for a WebSocket, its handshake
    endpoint: str  # "completions" or "chat"
    transport: Transport
    model: str  # the configured model name
    device: str
    # What was asked, after every transform_request: prompt or messages, sampling, session.
    parsed: ParsedRequest | None = None
    stats: GenerationStats = field(default_factory=GenerationStats)
    # Per-generation scratch space for plugins; key it by your plugin's name.
    state: dict[str, Any] = field(default_factory=dict)
    stop_reason: StopReason | None = None

    @property
    def session_id(self) -> str | None:
        return self.parsed.session_id if self.parsed else None

    @property
    def owner(self) -> str | None:
        """The caller's identity: the auth plugin's SHA-256 digest of the API key."""
        return self.parsed.owner if self.parsed else None

    def stop(self, reason: StopReason = "content_filter") -> None:
        """End the generation after the current piece (from `transform_output`)."""
        if reason not in ("content_filter", "stop", "length"):
            raise ValueError(f"stop reason {reason!r}: use 'content_filter', 'stop' or 'length'")
        if self.stop_reason is None:
            self.stop_reason = reason


class Plugin:
    """Base class with no-op hooks; override what you need."""

    name: ClassVar[str] = ""
    Config: ClassVar[type[PluginConfig]] = PluginConfig
    # How an unexpected exception in a deciding hook is handled unless the plugin's table
    # says otherwise: "fail_closed" refuses the request (security plugins), "fail_open"
    # logs it and goes on without this plugin.
    failure_mode: ClassVar[FailureMode] = "fail_open"
    # /health and /readiness skip every plugin that does not set this.
    sees_health_checks: ClassVar[bool] = False

    def __init__(self, config: Any = None) -> None:
        self.config = config if config is not None else self.Config()

    def setup(self, app: Sanic) -> None:
        """Called once while the app is built; raise to refuse to start."""

    async def on_request(self, request: Request) -> HTTPResponse | None:
        """Before the route; return a response (or raise an ApiError) to reject it."""
        return None

    async def on_response(self, request: Request, response: HTTPResponse) -> None:
        """After the route; may change the response's headers."""
        return None

    async def on_websocket_message(self, request: Request, message: str | bytes) -> None:
        """A WebSocket message arrived; raise an ApiError to refuse it."""
        return None

    async def transform_request(
        self, request: Request, parsed: ParsedRequest
    ) -> ParsedRequest | None:
        """Change `parsed` in place (or return a replacement); raise an ApiError to refuse."""
        return None

    def transform_output(self, generation: Generation, text: str, final: bool) -> str:
        """Return the text the client gets for this piece (`final`: the last call)."""
        return text

    def on_queued(self, generation: Generation) -> None:
        """The request was validated and queued for its model."""

    def on_admitted(self, generation: Generation) -> None:
        """The request left the queue and starts decoding."""

    def on_first_token(self, generation: Generation) -> None:
        """The first token was produced."""

    def on_token(self, generation: Generation, event: TokenEvent) -> None:
        """A piece of text was sent (after every transform_output)."""

    def on_finished(self, generation: Generation) -> None:
        """Generation ended; `generation.stats.finish_reason` says how."""
