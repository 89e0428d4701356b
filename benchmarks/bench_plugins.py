"""Per-request overhead of the built-in plugins: all three on against all off, one run.

One app serves the fake backend from inferd/testing/fakes.py (no model, so the plugins are all
that differs) with metrics, auth and rate_limit loaded (with a limit high enough never
to refuse); "off" swaps in an empty plugin chain, which is what an app configured with
no plugins runs. Same server, same model thread, same connection: only the chain
differs. Two measurements:

1. End to end: a real server on a local socket in this process, read one request at a
   time over a keep-alive connection, alternating off/on request by request so that any
   drift in the machine hits both alike. Medians, and the median of the paired
   differences (the per-request overhead).
2. Hooks alone: the plugin chain's calls for one request (and its generation's events)
   without sockets, HTTP or a model -- the plugins' own cost, free of network noise.

    python benchmarks/bench_plugins.py [--requests 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
from sanic import Sanic
from sanic.compat import Header
from sanic.response import json as json_response

from inferd.backends.base import GenerationStats, TokenEvent
from inferd.plugin_chain import PluginChain
from inferd.plugins.base import Generation
from inferd.testing.fakes import FakeBackend, make_app
from inferd.testing.live import live_server

KEY = "bench-key"
HEADERS = {"Authorization": f"Bearer {KEY}"}
ALL_ON = {
    "plugins": {"enabled": ["metrics", "auth", "rate_limit"]},
    "auth": {"enabled": True, "api_keys": [KEY]},
    "rate_limit": {"enabled": True, "requests_per_minute": 10**9},
    "metrics": {"enabled": True},
}
# label, method, path, JSON body (None: no body), share of --requests
CASES: list[tuple[str, str, str, dict[str, Any] | None, float]] = [
    ("GET /models", "GET", "/models", None, 1.0),
    ("POST /completions max_tokens=1", "POST", "/completions", {"max_tokens": 1}, 1.0),
    ("POST /completions max_tokens=32", "POST", "/completions", {"max_tokens": 32}, 1.0),
    (
        "POST /completions stream max_tokens=32",
        "POST",
        "/completions",
        {"max_tokens": 32, "stream": True},
        0.25,
    ),
]


async def one_request(client: httpx.AsyncClient, method: str, path: str, body: Any) -> float:
    start = time.perf_counter()
    response = await client.request(method, path, json=body, headers=HEADERS)
    await response.aread()
    elapsed = time.perf_counter() - start
    if response.status_code != 200:
        raise SystemExit(f"{method} {path} answered {response.status_code}: {response.text}")
    return elapsed


async def end_to_end(app: Sanic, chains: dict[str, PluginChain], requests: int) -> None:
    async with live_server(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        print(f"{'request':40} {'off (ms)':>9} {'on (ms)':>9} {'overhead (µs)':>14} {'ratio':>6}")
        for label, method, path, extra, share in CASES:
            body = {"model": "fake", "prompt": "hi", **extra} if extra is not None else None
            times: dict[str, list[float]] = {"off": [], "on": []}
            for _ in range(20):  # warm up: load the model, open the connection
                await one_request(client, method, path, body)
            for i in range(int(requests * share)):
                for name in ("off", "on") if i % 2 else ("on", "off"):
                    app.ctx.plugins = chains[name]
                    times[name].append(await one_request(client, method, path, body))
            t_off, t_on = (statistics.median(times[n]) * 1000 for n in ("off", "on"))
            paired = statistics.median(
                b - a for a, b in zip(times["off"], times["on"], strict=True)
            )
            print(
                f"{label:40} {t_off:9.3f} {t_on:9.3f} {paired * 1e6:+14.0f} "
                f"{t_on / t_off:6.2f}   (n={len(times['on'])})"
            )
    app.ctx.plugins = chains["on"]


async def hook_cost(chain: PluginChain, tokens: int, count: int) -> float:
    """Microseconds per request for the chain's hooks (and `tokens` token events)."""
    event = TokenEvent(text="x")
    start = time.perf_counter()
    for _ in range(count):
        request = SimpleNamespace(
            ctx=SimpleNamespace(), path="/completions", route=None, ip="127.0.0.1",
            headers=Header({"authorization": f"Bearer {KEY}"}),
        )  # fmt: skip
        await chain.on_request(request)
        if tokens:
            observer = chain.observe(
                Generation(request, "completions", "json", "fake/model", "cpu")
            )
            now = time.monotonic()
            stats = GenerationStats(2, 0, now, now, now)
            observer.on_admitted(stats)
            for _ in range(tokens):
                stats.generated_tokens += 1
                observer.on_token(event, stats)
            stats.finished_at, stats.finish_reason = time.monotonic(), "length"
            observer.on_finished(stats)
        await chain.on_response(request, json_response({}))
        await asyncio.sleep(0)  # let tasks the hooks scheduled run, and count them
    return (time.perf_counter() - start) / count * 1e6


async def hooks_alone(chains: dict[str, PluginChain], requests: int) -> None:
    print(f"\n{'hooks for one request':40} {'off (µs)':>9} {'on (µs)':>9} {'overhead (µs)':>14}")
    for tokens in (0, 1, 32):
        costs: dict[str, list[float]] = {"off": [], "on": []}
        for _ in range(5):  # alternate in blocks; keep each app's best block
            for name in ("off", "on"):
                costs[name].append(await hook_cost(chains[name], tokens, requests))
        off, on = min(costs["off"]), min(costs["on"])
        label = f"request + {tokens} token events" if tokens else "request without generation"
        print(f"{label:40} {off:9.1f} {on:9.1f} {on - off:+14.1f}")


async def main(requests: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="inferd-bench-"))
    app = make_app(folder, FakeBackend(endless=True), **ALL_ON)
    chains = {"off": PluginChain([]), "on": app.ctx.plugins}
    print("plugins on = metrics + auth + rate_limit (memory://); off = no plugins")
    print("end to end: sequential keep-alive requests, client and server in this process\n")
    await end_to_end(app, chains, requests)
    await hooks_alone(chains, requests)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="requests per app and case")
    asyncio.run(main(parser.parse_args().requests))
