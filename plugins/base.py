"""The plugin API: what a plugin can see and do on the request path.

A plugin is a class with a `name`, an optional pydantic `Config` for its own
config.toml table (`[<name>]`), and any of the hooks below. inferd calls the hooks of
the enabled plugins in the order config.toml lists them (docs/plugins.md has a guide):

- `setup(app)` once at start-up: add routes, listeners, or fail loudly.
- `on_request(request)` before the route; return a response to reject the request.
  WebSocket handshakes pass through it too, and a response rejects the upgrade.
- `on_response(request, response)` after the route, in reverse order (the first plugin
  sees the request first and the response last), only for plugins whose `on_request`
  ran. JSON responses, SSE responses (headers, before the body) and error responses
  pass through it; WebSocket upgrades do not, rejected handshakes do.
- `on_websocket_message(request, message)` for each message a WebSocket client sends;
  raise an `inferd.errors.ApiError` to refuse it (the client gets `__ERROR__:<message>`).
- `on_queued`, `on_admitted`, `on_first_token`, `on_token`, `on_finished`: the
  generation lifecycle, the same for JSON, SSE and WebSocket traffic. `Generation` says
  what is generating and carries counts and timings.

Hooks run on the event loop: keep them short and never block.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from inferd.backends.base import GenerationStats, TokenEvent

if TYPE_CHECKING:
    from sanic import Request, Sanic
    from sanic.response import HTTPResponse

Transport = Literal["json", "sse", "websocket"]


class PluginConfig(BaseModel):
    """Base for plugin config tables: unknown keys are errors.

    A config with `enabled = false` keeps its plugin out of the chain entirely.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(slots=True)
class Generation:
    """One generation as plugins see it."""

    request: Request
    endpoint: str  # "completions" or "chat"
    transport: Transport
    model: str
    device: str
    stats: GenerationStats = field(default_factory=GenerationStats)
    # Per-generation scratch space for plugins; key it by your plugin's name.
    state: dict[str, Any] = field(default_factory=dict)


class Plugin:
    """Base class with no-op hooks; override what you need."""

    name: ClassVar[str] = ""
    Config: ClassVar[type[PluginConfig]] = PluginConfig

    def __init__(self, config: Any = None) -> None:
        self.config = config if config is not None else self.Config()

    def setup(self, app: Sanic) -> None:
        """Called once while the app is built; raise to refuse to start."""

    async def on_request(self, request: Request) -> HTTPResponse | None:
        """Before the route; return a response to answer (reject) the request."""
        return None

    async def on_response(self, request: Request, response: HTTPResponse) -> None:
        """After the route; may change the response's headers."""
        return None

    async def on_websocket_message(self, request: Request, message: str | bytes) -> None:
        """A WebSocket message arrived; raise an ApiError to refuse it."""
        return None

    def on_queued(self, generation: Generation) -> None:
        """The request was validated and queued for its model."""

    def on_admitted(self, generation: Generation) -> None:
        """The request left the queue and starts decoding."""

    def on_first_token(self, generation: Generation) -> None:
        """The first token was produced."""

    def on_token(self, generation: Generation, event: TokenEvent) -> None:
        """A piece of text was produced."""

    def on_finished(self, generation: Generation) -> None:
        """Generation ended; `generation.stats.finish_reason` says how."""
