"""create_app: wiring only -- config, registry, sessions, admission, plugins and routes."""

from __future__ import annotations

import asyncio
import itertools

from sanic import Request, Sanic
from sanic.exceptions import MethodNotAllowed, RequestCancelled, SanicException
from sanic.exceptions import NotFound as RouteNotFound
from sanic.response import BaseHTTPResponse, HTTPResponse

from inferd import access_log, chat, completions, docs, health, history, models, webui, ws
from inferd.admission import Admission
from inferd.app_metrics import AppMetrics
from inferd.config import Config
from inferd.errors import handle_exception
from inferd.lifecycle import Lifecycle
from inferd.methods import add_head_routes
from inferd.openai import routes as openai
from inferd.plugin_chain import PluginChain
from inferd.plugin_loader import load_plugins
from inferd.registry import BackendFactory, ModelRegistry, default_backend_factory
from inferd.request_ids import REQUEST_ID_HEADER, IdentifiedRequest
from inferd.session_io import AsyncSessionStore
from inferd.sessions import SessionStore, open_storage

_app_numbers = itertools.count()
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff"}


def _unreadable(request: Request) -> bool:
    """Is this the answer to a request Sanic could not read (413 headers or body, 400
    malformed, 408 too slow)? Such rejections keep their own status: no plugin -- auth
    included -- has anything to say about them. Unknown routes and methods are not
    among them: with auth on they stay 401, so routes cannot be probed without a key."""
    error = getattr(request.ctx, "inferd_rejection", None)
    return isinstance(error, SanicException) and not isinstance(
        error, (RouteNotFound, MethodNotAllowed)
    )


def create_app(
    config: Config,
    *,
    backend_factory: BackendFactory = default_backend_factory,
    devices: tuple[str, ...] | None = None,
    name: str | None = None,
) -> Sanic:
    """Build the app. Nothing heavy happens here: models load after the server starts."""
    app = Sanic(name or f"inferd{next(_app_numbers)}", request_class=IdentifiedRequest)
    app.config.RESPONSE_TIMEOUT = config.server.response_timeout
    app.config.REQUEST_MAX_SIZE = config.server.request_max_size
    app.config.WEBSOCKET_MAX_SIZE = config.server.request_max_size
    app.config.GRACEFUL_SHUTDOWN_TIMEOUT = config.server.drain_timeout
    app.ctx.config = config
    app.ctx.registry = ModelRegistry(
        config.models, backend_factory=backend_factory, devices=devices
    )
    store = SessionStore(
        open_storage(config.sessions),
        max_messages=config.sessions.max_messages,
    )
    app.ctx.sessions = AsyncSessionStore(store, timeout=config.sessions.timeout)
    app.ctx.metrics = AppMetrics()  # plugins reach it through inferd.app_metrics.app_metrics
    app.ctx.admission = Admission()
    app.ctx.lifecycle = Lifecycle()
    app.ctx.plugins = PluginChain(load_plugins(config))
    # Every error is answered here, so each route passes error_format="json": left
    # unset, Sanic parses the handler's source to guess one, and on Python 3.11 that
    # parse races traceback formatting in backend threads (a SystemError at start-up).
    app.error_handler.add(Exception, handle_exception)
    # A disconnect cancels the handler: a CancelledError, which Exception does not catch.
    app.error_handler.add(RequestCancelled, handle_exception)

    for routes in (health, models, completions, chat, ws, history, webui, openai, docs):
        routes.register(app)
    app.ctx.plugins.setup(app)
    add_head_routes(app)  # after every route, the plugins' included
    access_log.install(app)

    @app.signal("http.lifecycle.exception")
    async def remember_rejection(request: Request, exception: BaseException) -> None:
        request.ctx.inferd_rejection = exception

    @app.on_request
    async def front_door(request: Request) -> HTTPResponse | None:
        access_log.begin(request)
        if _unreadable(request):
            return None
        refusal = await request.app.ctx.lifecycle.on_request(request)
        if refusal is not None:
            return refusal
        return await request.app.ctx.plugins.on_request(request)

    @app.on_response
    async def run_response_plugins(
        request: Request, response: BaseHTTPResponse
    ) -> BaseHTTPResponse | None:
        # A plugin that fails closed (or raises an ApiError) replaces the response.
        replaced = await request.app.ctx.plugins.on_response(request, response)
        sent = replaced if replaced is not None else response
        sent.headers.update(SECURITY_HEADERS)
        # The id the access log logs, unless a plugin answers with its own (as
        # examples/request_id_plugin.py does).
        sent.headers.setdefault(REQUEST_ID_HEADER, request.id)
        access_log.responded(request, sent.status)
        return replaced

    @app.before_server_start
    async def check_session_store(app: Sanic) -> None:
        # A shared store that is down should stop start-up, not fail every chat.
        try:
            await asyncio.to_thread(app.ctx.sessions.store.check)
        except Exception as error:
            raise RuntimeError(f"sessions: the store cannot be reached: {error}") from None

    @app.after_server_start
    async def start_preloading(app: Sanic) -> None:
        app.ctx.registry.preload()

    return app
