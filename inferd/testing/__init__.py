"""Test helpers for inferd and for outside plugin packages (docs/plugins.md, "Testing").

- `make_app(tmp_path, backend=None, **tables)`: an app serving FakeBackend (no model,
  deterministic text: `REPLY`, one character per token) with your config tables.
  `app.asgi_client` (sanic-testing) answers JSON requests without a socket.
- `live_server(app)`: the app on a real socket (async context manager -> base URL), for
  SSE, WebSocket and anything that needs true streaming.
- `generate(base, transport, ...)`: one generation over "json", "sse" or "websocket"
  (`TRANSPORTS`), answered as a `Reply` (status, headers, text, error).
- `scrape_metrics(base)`, `metric_value(text, name, **labels)`: read /metrics.
- `settle(app)`: wait for the plugins' async lifecycle hooks to run.
- `parse_sse(body)`: Server-Sent Events as a client reads them.
- `batching.run_alone` / `batching.run_together`: drive a Batcher (a backend's own
  engine) with requests joining and leaving at given steps.

Needs the `testing` extra: `pip install 'inferd[testing]'`.
"""

from inferd.testing.clients import (
    TRANSPORTS,
    Reply,
    generate,
    metric_value,
    scrape_metrics,
    ws_ask,
    ws_url,
)
from inferd.testing.fakes import (
    EOS,
    REPLY,
    FakeBackend,
    FakeDecoding,
    fake_config,
    make_app,
    settle,
)
from inferd.testing.live import live_server
from inferd.testing.sse import SseEvent, SseStream, parse_sse

__all__ = [
    "EOS",
    "REPLY",
    "TRANSPORTS",
    "FakeBackend",
    "FakeDecoding",
    "Reply",
    "SseEvent",
    "SseStream",
    "fake_config",
    "generate",
    "live_server",
    "make_app",
    "metric_value",
    "parse_sse",
    "scrape_metrics",
    "settle",
    "ws_ask",
    "ws_url",
]
