"""/health latency while streams decode: idle against 32 streams, in one run.

Starts `inferd serve` on a local model (max_concurrent = the number of streams, so they
all decode together), probes GET /health every 100 ms from a separate process -- first
with nothing running, then while N SSE streams decode, each restarting as it ends --
and prints p50/p99 of both and their ratio.

    python benchmarks/bench_health.py --model-dir ../shared/models/stories260K --streams 32
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import signal
import tempfile
import time
from pathlib import Path

import httpx
from soak import percentile, probe_health, start_server


def probe(url: str, seconds: float) -> list[float]:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    prober = context.Process(target=probe_health, args=(url, time.time() + seconds, results))
    prober.start()
    timings, _ = results.get(timeout=seconds + 60)
    prober.join()
    return timings


async def under_load(base: str, streams: int, seconds: float) -> tuple[list[float], int]:
    body = {"model": "soak", "prompt": "Once upon a time", "max_tokens": 400, "stream": True}
    stop = time.monotonic() + seconds + 5
    tokens = 0

    async def stream(client: httpx.AsyncClient) -> None:
        nonlocal tokens
        while time.monotonic() < stop:
            async with client.stream("POST", "/completions", json=body) as response:
                async for chunk in response.aiter_text():
                    tokens += chunk.count("data:")

    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        tasks = [asyncio.create_task(stream(client)) for _ in range(streams)]
        await asyncio.sleep(3)  # all streams decoding
        timings = await asyncio.to_thread(probe, f"{base}/health", seconds)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return timings, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS for the server")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="inferd-health-") as folder:
        server, base = start_server(args.model_dir, Path(folder), args.streams, args.threads)
        try:
            idle = probe(f"{base}/health", args.seconds)
            loaded, tokens = asyncio.run(under_load(base, args.streams, args.seconds))
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
    for name, timings in (("idle", idle), (f"{args.streams} streams", loaded)):
        p50, p99 = percentile(timings, 0.5) * 1000, percentile(timings, 0.99) * 1000
        print(f"{name:>12}: {len(timings)} probes, p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    ratio = percentile(loaded, 0.99) / percentile(idle, 0.99)
    print(f"{'ratio':>12}: p99 under load / idle = {ratio:.1f}x")
    print(f"{'tokens':>12}: about {tokens / (args.seconds + 3):.0f} streamed pieces/s")


if __name__ == "__main__":
    main()
