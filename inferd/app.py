"""create_app: wiring only -- config, registry, sessions, plugins and routes."""

from __future__ import annotations

import itertools

from sanic import Request, Sanic
from sanic.response import HTTPResponse

from inferd import chat, completions, docs, health, history, models, webui, ws
from inferd.app_metrics import AppMetrics
from inferd.config import Config
from inferd.errors import handle_exception
from inferd.openai import routes as openai
from inferd.plugin_chain import PluginChain
from inferd.plugin_loader import load_plugins
from inferd.registry import BackendFactory, ModelRegistry, default_backend_factory
from inferd.sessions import SessionStore

_app_numbers = itertools.count()


def create_app(
    config: Config,
    *,
    backend_factory: BackendFactory = default_backend_factory,
    devices: tuple[str, ...] | None = None,
    name: str | None = None,
) -> Sanic:
    """Build the app. Nothing heavy happens here: models load after the server starts."""
    app = Sanic(name or f"inferd{next(_app_numbers)}")
    app.config.RESPONSE_TIMEOUT = config.server.response_timeout
    app.config.REQUEST_MAX_SIZE = config.server.request_max_size
    app.config.WEBSOCKET_MAX_SIZE = config.server.request_max_size
    app.ctx.config = config
    app.ctx.registry = ModelRegistry(
        config.models, backend_factory=backend_factory, devices=devices
    )
    app.ctx.sessions = SessionStore(config.sessions.path)
    app.ctx.metrics = AppMetrics()  # plugins reach it through inferd.app_metrics.app_metrics
    app.ctx.plugins = PluginChain(load_plugins(config))
    app.error_handler.add(Exception, handle_exception)

    for routes in (health, models, completions, chat, ws, history, webui, openai, docs):
        routes.register(app)
    app.ctx.plugins.setup(app)

    @app.on_request
    async def run_request_plugins(request: Request) -> HTTPResponse | None:
        return await request.app.ctx.plugins.on_request(request)

    @app.on_response
    async def run_response_plugins(request: Request, response: HTTPResponse) -> HTTPResponse | None:
        # A plugin that fails closed (or raises an ApiError) replaces the response.
        return await request.app.ctx.plugins.on_response(request, response)

    @app.after_server_start
    async def start_preloading(app: Sanic) -> None:
        app.ctx.registry.preload()

    return app
