"""The plugin API: what a plugin can see and do on the request path.

A plugin is a class with a `name`, an optional pydantic `Config` for its own
config.toml table (`[<name>]`), and any of the hooks below. inferd calls the hooks of
the enabled plugins in the order config.toml lists them:

- `setup(app)` once at start-up: add routes, listeners, or fail loudly.
- `on_request(request)` before the route; return a response to reject the request.
  WebSocket handshakes pass through it too.
- `on_response(request, response)` after the route, for JSON and SSE responses (an SSE
  response's headers, before its body) and, for WebSockets, for the handshake.
- `on_admitted`, `on_first_token`, `on_token`, `on_finished`: the generation lifecycle,
  the same for JSON, SSE and WebSocket traffic. `Generation` says what is generating
  and carries counts and timings.

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
    """Base for plugin config tables: unknown keys are errors."""

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


class Plugin:
    """Base class with no-op hooks; override what you need."""

    name: ClassVar[str] = ""
    Config: ClassVar[type[PluginConfig]] = PluginConfig

    def __init__(self, config: Any = None) -> None:
        self.config = config if config is not None else self.Config()

    def setup(self, app: Sanic) -> None:
        """Called once while the app is built."""

    async def on_request(self, request: Request) -> HTTPResponse | None:
        return None

    async def on_response(self, request: Request, response: HTTPResponse) -> None:
        return None

    def on_admitted(self, generation: Generation) -> None:
        """The request left the queue and starts decoding."""

    def on_first_token(self, generation: Generation) -> None:
        """The first token was produced."""

    def on_token(self, generation: Generation, event: TokenEvent) -> None:
        """A piece of text was produced."""

    def on_finished(self, generation: Generation) -> None:
        """Generation ended; `generation.stats.finish_reason` says how."""
