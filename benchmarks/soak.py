"""Soak and fault benchmark: N mixed clients for M minutes against an inferd server.

    python benchmarks/soak.py --model-dir ../shared/models/stories260K --clients 32 --minutes 10
    python benchmarks/soak.py --url http://127.0.0.1:3000 --model NAME --pid PID

With --model-dir it starts `inferd serve` on that model itself (a free loopback port, a
temporary session store) and stops it with SIGTERM at the end, checking that the drain
exits 0. With --url it drives a server you started -- loopback only -- and reads its
memory from /proc/PID when --pid is given.

The clients (soak_clients.py) mix JSON and SSE completions, SSE and WebSocket chat
turns on their own sessions (each history is read back and checked), clients that
disconnect mid-answer, malformed bodies and rollbacks. Reported: requests by kind and
status, unexpected 5xx (every 5xx except a 503 with Retry-After, which is load
shedding), lost and corrupted session messages, /health p50/p99 from a separate process
probing every 100 ms, RSS at start (after a warm-up) and end, and tokens/s. It stops
itself: at the deadline, and at the latest two minutes after it.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import multiprocessing
import os
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
from engine_bench.machine import rss_mib
from engine_bench.servers import ServerFailed, ServerProcess, inferd_server
from soak_clients import SoakClient, Tally

MAX_CLIENTS, MAX_MINUTES = 256, 120


def probe_health(url: str, until: float, results: multiprocessing.Queue) -> None:
    """In its own process: GET /health every 100 ms, so the soak's own busy event loop
    does not count in the latency."""
    timings, failures = [], 0
    with httpx.Client(timeout=10) as client:
        while time.time() < until:
            started = time.perf_counter()
            try:
                ok = client.get(url).status_code == 200
            except httpx.HTTPError:
                ok = False
            timings.append(time.perf_counter() - started)
            failures += not ok
            time.sleep(max(0.0, 0.1 - (time.perf_counter() - started)))
    results.put((timings, failures))


def tokens_generated(base: str) -> float | None:
    """Tokens generated so far, from /metrics; None when the server has no metrics plugin."""
    response = httpx.get(f"{base}/metrics", timeout=30)
    if response.status_code != 200:
        return None
    text = response.text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("completions_tokens_total{")
    )


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else 0.0


def loopback_only(url: str) -> None:
    host = urlparse(url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise SystemExit(f"soak: {url} is not a loopback address; this load is for your own box")


def start_server(
    model_dir: Path, folder: Path, max_concurrent: int, threads: int | None
) -> ServerProcess:
    config = (
        f'[sessions]\npath = "{folder / "sessions"}"\n\n'
        f'[[models]]\nid = "soak"\nname = "soak"\npath = "{model_dir.resolve()}"\n'
        f"max_concurrent = {max_concurrent}\n"
    )
    env = {"OMP_NUM_THREADS": str(threads)} if threads else None
    try:
        return inferd_server(folder, "server", config, start_timeout=120, env=env).start()
    except ServerFailed as error:
        raise SystemExit(f"soak: {error}") from None


async def soak(args: argparse.Namespace, base: str, pid: int | None) -> dict[str, object]:
    tally = Tally()
    duration = args.minutes * 60
    started = time.monotonic()
    deadline = started + duration
    context = multiprocessing.get_context("spawn")
    health_results = context.Queue()
    prober = context.Process(
        target=probe_health, args=(f"{base}/health", time.time() + duration, health_results)
    )
    prober.start()
    tokens_before = tokens_generated(base)
    rss = {"first": rss_mib(pid)}
    samples: list[tuple[float, float | None]] = []

    async def sample_rss() -> None:
        while time.monotonic() < deadline:
            await asyncio.sleep(min(10, duration / 10))
            samples.append((round(time.monotonic() - started), rss_mib(pid)))
            if "start" not in rss and time.monotonic() - started >= args.warmup:
                rss["start"] = samples[-1][1]

    clients = [SoakClient(n, base, args.model, tally, args.seed) for n in range(args.clients)]
    sampler = asyncio.create_task(sample_rss())
    runs = asyncio.gather(*(client.run(deadline) for client in clients))
    try:
        await asyncio.wait_for(runs, timeout=duration + 120)  # hard stop
    except asyncio.TimeoutError:
        tally.transport_errors["soak hard stop"] += 1
    sampler.cancel()
    rss["end"] = rss_mib(pid)
    elapsed = time.monotonic() - started
    tokens_after = tokens_generated(base)
    timings, health_failures = health_results.get(timeout=60)
    prober.join(timeout=10)
    return {
        "clients": args.clients,
        "minutes": round(elapsed / 60, 2),
        "requests": sum(tally.requests.values()),
        "requests_by_kind": dict(tally.requests),
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "unexpected_5xx": len(tally.unexpected_5xx),
        "unexpected_5xx_examples": tally.unexpected_5xx[:10],
        "refused_503_retry_after": tally.refused_503,
        "wrong_statuses": tally.wrong_statuses[:10],
        "transport_errors": dict(tally.transport_errors),
        "session_messages_checked": tally.checked_messages,
        "lost_messages": len(tally.lost_messages),
        "corrupted_messages": len(tally.corrupted_messages),
        "problem_examples": (tally.lost_messages + tally.corrupted_messages)[:10],
        "late_turns": tally.late_turns,
        "health_probes": len(timings),
        "health_failures": health_failures,
        "health_p50_ms": round(percentile(timings, 0.5) * 1000, 1),
        "health_p99_ms": round(percentile(timings, 0.99) * 1000, 1),
        "tokens_per_second": (
            None  # no /metrics: the server runs without the metrics plugin
            if tokens_before is None or tokens_after is None
            else round((tokens_after - tokens_before) / elapsed, 1)
        ),
        "rss_mib_first": rss["first"],
        "rss_mib_start": rss.get("start", rss["first"]),
        "rss_mib_end": rss["end"],
        "rss_drift_percent": _drift(rss.get("start", rss["first"]), rss["end"]),
        # Caches (SQLite's page cache, allocators) may still fill after the warm-up: the
        # second half shows whether memory keeps growing.
        "rss_drift_second_half_percent": _drift(_sample_at(samples, elapsed / 2), rss["end"]),
        "rss_samples": samples,
    }


def _sample_at(samples: list[tuple[float, float | None]], seconds: float) -> float | None:
    later = [rss for at, rss in samples if at >= seconds]
    return later[0] if later else None


def _drift(start: float | None, end: float | None) -> float | None:
    return None if not start or end is None else round((end - start) / start * 100, 2)


def report(result: dict[str, object]) -> None:
    for key in (
        "clients", "minutes", "requests", "statuses", "unexpected_5xx", "refused_503_retry_after",
        "wrong_statuses", "transport_errors", "session_messages_checked", "lost_messages",
        "corrupted_messages", "late_turns", "health_p50_ms", "health_p99_ms", "health_failures",
        "tokens_per_second", "rss_mib_first", "rss_mib_start", "rss_mib_end", "rss_drift_percent",
        "rss_drift_second_half_percent", "server_exit_code",
    ):  # fmt: skip
        if key in result:
            print(f"{key:>30}: {result[key]}")
    for key in ("unexpected_5xx_examples", "problem_examples"):
        for example in result[key]:  # type: ignore[attr-defined]
            print(f"{'':>30}  {example}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--model-dir", type=Path, help="start `inferd serve` on this model")
    target.add_argument("--url", help="a running server (loopback only)")
    parser.add_argument("--model", default="soak", help="model name (with --url)")
    parser.add_argument("--pid", type=int, help="the server's pid, for its RSS (with --url)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=60, help="seconds before RSS 'start'")
    parser.add_argument("--max-concurrent", type=int, default=8, help="with --model-dir")
    parser.add_argument(
        "--threads", type=int, help="with --model-dir: OMP_NUM_THREADS for the server (torch)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    if not 1 <= args.clients <= MAX_CLIENTS or not 0 < args.minutes <= MAX_MINUTES:
        raise SystemExit(f"soak: 1-{MAX_CLIENTS} clients for at most {MAX_MINUTES} minutes")
    args.warmup = min(args.warmup, args.minutes * 60 / 4)

    with tempfile.TemporaryDirectory(prefix="inferd-soak-") as folder:
        server = None
        if args.model_dir:
            server = start_server(args.model_dir, Path(folder), args.max_concurrent, args.threads)
            base, pid = server.base_url, server.pid
        else:
            loopback_only(args.url)
            base, pid = args.url.rstrip("/"), args.pid
        try:
            result = asyncio.run(soak(args, base, pid))
        finally:
            if server is not None:
                exit_code = server.stop(timeout=60)  # SIGTERM: the drain must exit 0
        if server is not None:
            result["server_exit_code"] = "killed after 60 s" if exit_code is None else exit_code
    print(f"soak against {base} (load average {os.getloadavg()[0]:.1f} at the end)")
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
