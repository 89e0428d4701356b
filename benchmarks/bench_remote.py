"""The gateway's overhead: one engine called directly, and through an inferd gateway whose
only model is that engine (`backend = "openai"`), in one run.

The engine is mlx-lm's OpenAI server on stories260K (or any OpenAI server: --upstream
URL --upstream-model NAME, e.g. vLLM on a GPU node). The gateway is a real `inferd
serve` process. Each round sends the same greedy streaming chat request to both, in
alternation, one at a time and then `--concurrency` at once; the report gives medians
of time to first token (TTFT) and of a stream's tokens/s (tokens over the answer's
whole time), the aggregate tokens/s
under concurrency, and the ratios gateway / direct. A tiny model makes the gateway's
share as large as it gets: the engine answers in milliseconds, so every hop shows.

    python benchmarks/bench_remote.py                  # mlx_lm.server on stories260K
    python benchmarks/bench_remote.py --rounds 20 --tokens 128 --concurrency 8
    python benchmarks/bench_remote.py --instant         # the gateway's own cost
    python benchmarks/bench_remote.py --upstream http://gpu-1:8000/v1 \
        --upstream-model Qwen/Qwen2.5-7B-Instruct

--instant puts benchmarks/instant_upstream.py in the engine's place: it answers at once,
so what remains is the gateway's own cost per request and per token (on the client's
machine, which runs both).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from engine_bench.servers import ServerProcess, free_port, inferd_server

PROMPT = "Once upon a time"
DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "shared" / "models" / "stories260K"
GATEWAY_MODEL = "bench"


@dataclass
class Sample:
    ttft: float  # seconds to the first content chunk
    total: float  # seconds to the end of the answer
    tokens: int  # generated tokens

    @property
    def tokens_per_second(self) -> float:
        """The stream's rate as its reader sees it: tokens over the whole answer's time.
        (Not from the first chunk on: the gateway coalesces tokens that arrive during a
        write, which would flatter it.)"""
        return self.tokens / self.total


async def stream_once(client: httpx.AsyncClient, url: str, model: str, tokens: int) -> Sample:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    first = last = None
    count = 0  # generated tokens, from the usage: a chunk may carry several
    async with client.stream("POST", url + "/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            choices = chunk.get("choices") or []
            if choices and (choices[0].get("delta") or {}).get("content"):
                last = time.perf_counter()
                first = first or last
            if chunk.get("usage"):
                count = chunk["usage"]["completion_tokens"]
    if first is None or last is None:
        raise SystemExit(f"{url} streamed no text")
    return Sample(first - start, time.perf_counter() - start, count)


async def concurrent(client: httpx.AsyncClient, url: str, model: str, tokens: int, n: int):
    start = time.perf_counter()
    samples = await asyncio.gather(*(stream_once(client, url, model, tokens) for _ in range(n)))
    return sum(s.tokens for s in samples) / (time.perf_counter() - start)


async def measure(args: argparse.Namespace, direct: str, gateway: str) -> None:
    routes = {"direct": (direct, args.upstream_model), "gateway": (gateway, GATEWAY_MODEL)}
    single: dict[str, list[Sample]] = {name: [] for name in routes}
    aggregate: dict[str, list[float]] = {name: [] for name in routes}
    limits = httpx.Limits(max_connections=args.concurrency * 2)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        for url, model in routes.values():  # warm up both paths (connections, caches)
            await stream_once(client, url, model, args.tokens)
        for round_number in range(args.rounds):
            # Alternate which goes first, so neither always follows the other.
            order = list(routes) if round_number % 2 == 0 else list(reversed(routes))
            for name in order:
                url, model = routes[name]
                single[name].append(await stream_once(client, url, model, args.tokens))
            for name in order:
                url, model = routes[name]
                tps = await concurrent(client, url, model, args.tokens, args.concurrency)
                aggregate[name].append(tps)
    report(args, single, aggregate)


def report(args, single: dict[str, list[Sample]], aggregate: dict[str, list[float]]) -> None:
    def median(values: list[float]) -> float:
        return statistics.median(values)

    ttft = {name: median([s.ttft for s in samples]) for name, samples in single.items()}
    tps = {name: median([s.tokens_per_second for s in samples]) for name, samples in single.items()}
    agg = {name: median(values) for name, values in aggregate.items()}
    tokens = median([s.tokens for s in single["gateway"]])
    print(f"{args.rounds} rounds, {tokens:.0f} tokens per answer, upstream {args.upstream_label}")
    print(f"{'':28}{'direct':>12}{'gateway':>12}{'ratio':>10}{'added':>12}")
    added = (ttft["gateway"] - ttft["direct"]) * 1000
    print(
        f"{'TTFT, 1 stream (ms)':28}{ttft['direct'] * 1000:12.2f}{ttft['gateway'] * 1000:12.2f}"
        f"{ttft['gateway'] / ttft['direct']:10.2f}{added:+12.2f}"
    )
    print(
        f"{'tok/s, 1 stream':28}{tps['direct']:12.1f}{tps['gateway']:12.1f}"
        f"{tps['gateway'] / tps['direct']:10.2f}"
    )
    label = f"tok/s, {args.concurrency} streams (sum)"
    ratio = agg["gateway"] / agg["direct"]
    print(f"{label:28}{agg['direct']:12.1f}{agg['gateway']:12.1f}{ratio:10.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="for mlx_lm.server")
    parser.add_argument("--upstream", help="an OpenAI base URL to use instead of mlx_lm.server")
    parser.add_argument("--upstream-model", help="the upstream's model name (with --upstream)")
    parser.add_argument(
        "--instant", action="store_true", help="an upstream that answers at once instead"
    )
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, contextlib.ExitStack() as stack:
        folder = Path(folder)
        if args.instant:
            port = free_port()
            script = str(Path(__file__).with_name("instant_upstream.py"))
            command = [sys.executable, script, str(port), "--tokens", str(args.tokens)]
            url = f"http://127.0.0.1:{port}/v1"
            log = folder / "instant.log"
            stack.enter_context(ServerProcess("instant", command, port, "/v1/models", log, 120))
            args.upstream, args.upstream_model = url, "instant"
            args.upstream_label = "instant_upstream.py (answers at once)"
        elif args.upstream is None:
            port = free_port()
            model = str(args.model.resolve())
            command = [sys.executable, "-m", "mlx_lm", "server", "--model", model]
            command += ["--port", str(port)]
            log = folder / "mlx.log"
            stack.enter_context(ServerProcess("mlx_lm.server", command, port, "/health", log, 120))
            args.upstream, args.upstream_model = f"http://127.0.0.1:{port}/v1", model
            args.upstream_label = f"mlx_lm.server on {args.model.name}"
        else:
            args.upstream_label = args.upstream
        config = f"""
[sessions]
path = "sessions"

[plugins]
enabled = ["metrics"]

[[models]]
id = "bench"
name = "{GATEWAY_MODEL}"
backend = "openai"
url = "{args.upstream}"
upstream_model = "{args.upstream_model}"
context_length = 4096
max_concurrent = {max(8, args.concurrency)}
preload = true
"""
        gateway = stack.enter_context(inferd_server(folder, "gateway", config, 120)).base_url
        asyncio.run(measure(args, args.upstream, gateway + "/v1"))


if __name__ == "__main__":
    main()
