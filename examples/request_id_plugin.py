"""An example inferd plugin: a request id on every response and an audit log line.

- `on_request` takes the caller's X-Request-Id when it is sane, or makes one up.
- `on_response` sends it back in the same header (JSON, SSE and error responses).
- `on_finished` logs one audit line per generation -- JSON, SSE and WebSocket alike --
  with the request id, the caller, the model, token counts, timings and finish reason.

Enable it by dotted path, after auth so that it knows the caller (run the server from
the repo root with `PYTHONPATH=.` so that `examples` is importable, or ship the plugin
as a package of its own, see docs/plugins.md):

    [plugins]
    enabled = ["metrics", "auth", "rate_limit", "examples.request_id_plugin:RequestIdPlugin"]

    [request_id]
    header = "X-Request-Id"
"""

from __future__ import annotations

import logging
import re
import uuid

from sanic import Request
from sanic.response import HTTPResponse

from inferd.plugins.base import Generation, Plugin, PluginConfig

log = logging.getLogger("inferd.audit")
# A client's id is echoed in headers and logs: accept only short, plain ones.
_SANE_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


class RequestIdConfig(PluginConfig):
    header: str = "X-Request-Id"  # where the id is read from and written to
    audit: bool = True  # log one line per finished generation to "inferd.audit"


class RequestIdPlugin(Plugin):
    name = "request_id"  # also the name of its config table, [request_id]
    Config = RequestIdConfig
    config: RequestIdConfig

    async def on_request(self, request: Request) -> HTTPResponse | None:
        incoming = request.headers.get(self.config.header, "")
        request.ctx.request_id = incoming if _SANE_ID.match(incoming) else uuid.uuid4().hex
        return None  # never rejects

    async def on_response(self, request: Request, response: HTTPResponse) -> None:
        response.headers[self.config.header] = request.ctx.request_id

    def on_finished(self, generation: Generation) -> None:
        if not self.config.audit:
            return
        stats = generation.stats
        owner = getattr(generation.request.ctx, "owner", None)  # set by the auth plugin
        ttft = (stats.first_token_at - stats.queued_at) if stats.first_token_at else None
        total = (stats.finished_at - stats.queued_at) if stats.finished_at else None
        log.info(
            "request_id=%s caller=%s endpoint=%s transport=%s model=%s device=%s "
            "prompt_tokens=%d generated_tokens=%d ttft_s=%s total_s=%s finish_reason=%s",
            generation.request.ctx.request_id,
            owner[:12] if owner else "-",
            generation.endpoint,
            generation.transport,
            generation.model,
            generation.device,
            stats.prompt_tokens,
            stats.generated_tokens,
            f"{ttft:.4f}" if ttft is not None else "-",
            f"{total:.4f}" if total is not None else "-",
            stats.finish_reason,
        )
