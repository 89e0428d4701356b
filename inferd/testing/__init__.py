"""Test helpers for inferd and for outside plugin packages: a fake backend and a live server.

`make_app` builds an app that serves FakeBackend (no model, deterministic text);
`live_server` runs any app on a real socket for streaming and WebSocket tests.
"""

from inferd.testing.fakes import EOS, REPLY, FakeBackend, FakeDecoding, fake_config, make_app
from inferd.testing.live import live_server

__all__ = [
    "EOS",
    "REPLY",
    "FakeBackend",
    "FakeDecoding",
    "fake_config",
    "live_server",
    "make_app",
]
