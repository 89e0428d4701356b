"""Per-token cost of an output transform that changes nothing, against no transform.

Three plugin chains, otherwise identical: "none" (no plugins), "empty" (one plugin whose
`transform_output` returns its text), and "empty async" (the same as `async def`, which
the stream must await event by event). Two measurements, interleaved in one run:

1. The stream alone: N token events pushed into a Stream the way the model thread
   pushes them, read back as the routes read them (`async for`), so the cost is the
   event loop's work per token without sockets or a model. Best of several blocks,
   chains alternating block by block.
2. End to end: a real server on a local socket in this process, serving the fake
   backend (no model: the server's own work dominates), JSON and SSE completions of
   `--tokens` tokens, the chain swapped request by request; medians of per-token times.

    python benchmarks/bench_output_transform.py [--tokens 256] [--requests 200]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
from sanic import Sanic

from inferd.backends.base import SamplingParams, TokenEvent
from inferd.plugin_chain import PluginChain
from inferd.plugins.base import Generation, Plugin
from inferd.stream import Stream
from inferd.testing import FakeBackend, live_server, make_app


class Empty(Plugin):
    name = "empty"

    def transform_output(self, generation: Generation, text: str, final: bool) -> str:
        return text


class EmptyAsync(Plugin):
    name = "empty_async"

    async def transform_output(self, generation: Generation, text: str, final: bool) -> str:
        return text


CHAINS = {
    "none": PluginChain([]),
    "empty": PluginChain([Empty()]),
    "empty async": PluginChain([EmptyAsync()]),
}


async def stream_block(chain: PluginChain, tokens: int) -> float:
    """Nanoseconds per token to push and read one generation of `tokens` events."""
    request = SimpleNamespace(ctx=SimpleNamespace())
    generation = Generation(request, "completions", "json", "fake/model", "cpu")
    event = TokenEvent(text="x", token_id=120)
    start = time.perf_counter_ns()
    stream = Stream([1, 2, 3], SamplingParams(), chain.observe(generation))
    for _ in range(tokens):
        stream.push(event)
    stream.push(TokenEvent(finish_reason="length"))
    count = 0
    async for _ in stream:
        count += 1
    elapsed = time.perf_counter_ns() - start
    assert count == tokens + 1
    return elapsed / tokens


async def stream_alone(tokens: int, blocks: int) -> dict[str, float]:
    best: dict[str, float] = {name: float("inf") for name in CHAINS}
    for _ in range(blocks):
        for name, chain in CHAINS.items():
            best[name] = min(best[name], await stream_block(chain, tokens))
    return best


async def one_request(client: httpx.AsyncClient, body: dict) -> float:
    start = time.perf_counter()
    response = await client.post("/completions", json=body)
    await response.aread()
    if response.status_code != 200:
        raise SystemExit(f"POST /completions answered {response.status_code}: {response.text}")
    return time.perf_counter() - start


async def end_to_end(app: Sanic, tokens: int, requests: int) -> dict[str, dict[str, float]]:
    """Median microseconds per token, by transport and chain."""
    results: dict[str, dict[str, float]] = {}
    async with live_server(app) as url, httpx.AsyncClient(base_url=url, timeout=60) as client:
        for transport in ("json", "sse"):
            body = {"model": "fake", "prompt": "hi", "max_tokens": tokens}
            body["stream"] = transport == "sse"
            for _ in range(10):  # warm up: load the model, open the connection
                await one_request(client, body)
            times: dict[str, list[float]] = {name: [] for name in CHAINS}
            names = list(CHAINS)
            for i in range(requests):
                for name in names[i % 3 :] + names[: i % 3]:  # rotate who goes first
                    app.ctx.plugins = CHAINS[name]
                    times[name].append(await one_request(client, body))
            results[transport] = {
                name: statistics.median(t) / tokens * 1e6 for name, t in times.items()
            }
    return results


async def main(tokens: int, requests: int) -> None:
    print(f"per-token cost of an output transform; {tokens} tokens per generation\n")
    alone = await stream_alone(tokens, blocks=40)
    base = alone["none"]
    print(f"{'stream alone (best of 40)':28} {'ns/token':>9} {'vs none':>9} {'ratio':>6}")
    for name, value in alone.items():
        print(f"{name:28} {value:9.0f} {value - base:+9.0f} {value / base:6.2f}")

    folder = Path(tempfile.mkdtemp(prefix="inferd-bench-"))
    app = make_app(folder, FakeBackend(endless=True), plugins={"enabled": []})
    e2e = await end_to_end(app, tokens, requests)
    print(f"\n{'end to end (median)':28} {'µs/token':>9} {'vs none':>9} {'ratio':>6}")
    for transport, values in e2e.items():
        base = values["none"]
        for name, value in values.items():
            label = f"{transport.upper()} {name}"
            print(f"{label:28} {value:9.2f} {value - base:+9.2f} {value / base:6.2f}")
    print(f"\n(n={requests} requests per chain and transport)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=256, help="tokens per generation")
    parser.add_argument("--requests", type=int, default=200, help="requests per chain")
    args = parser.parse_args()
    asyncio.run(main(args.tokens, args.requests))
