"""Single-stream decode speed: inferd's server against plain `model.generate`.

Both run the same model on the same machine, one after the other, repeated in
alternation; the report gives medians and the ratio server / generate. The server is a
real `inferd serve` process, read over HTTP (JSON, and SSE for time to first token).

    python benchmarks/bench_stream.py                        # random Qwen2.5-0.5B shape
    python benchmarks/bench_stream.py --model ../shared/models/stories260K
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch
from random_models import QWEN25_05B, build_random_qwen
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPT = "Once upon a time"


def time_generate(model_dir: Path, tokens: int, runs: int) -> list[float]:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = tokenizer(PROMPT, return_tensors="pt")
    rates = []
    for _ in range(runs):
        start = time.perf_counter()
        out = model.generate(
            **ids,
            max_new_tokens=tokens,
            min_new_tokens=tokens,
            do_sample=False,
            pad_token_id=tokenizer.eos_token_id,
        )
        elapsed = time.perf_counter() - start
        rates.append((out.shape[1] - ids.input_ids.shape[1]) / elapsed)
    return rates


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model_dir: Path, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    config = workdir / "bench.toml"
    config.write_text(
        f'[sessions]\npath = "sessions"\n\n[[models]]\nid = "bench"\nname = "bench"\n'
        f'path = "{model_dir}"\npreload = true\n'
    )
    port = free_port()
    log = (workdir / "server.log").open("wb")
    command = [sys.executable, "-m", "inferd.cli", "serve", "--config", str(config)]
    server = subprocess.Popen([*command, "--port", str(port)], stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{base}/readiness", timeout=1).status_code == 200:
                return server, base
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    server.kill()
    raise SystemExit(f"server did not become ready; see {workdir / 'server.log'}")


def time_server(base: str, tokens: int) -> tuple[float, float, float]:
    """(tokens/s over JSON, tokens/s over SSE, SSE time to first token in seconds)."""
    body = {"model": "bench", "prompt": PROMPT, "max_tokens": tokens, "temperature": 0}
    with httpx.Client(timeout=600) as client:
        start = time.perf_counter()
        reply = client.post(f"{base}/completions", json=body).json()
        json_rate = reply["tokens"] / (time.perf_counter() - start)
        start = time.perf_counter()
        first = None
        with client.stream("POST", f"{base}/completions", json={**body, "stream": True}) as r:
            for line in r.iter_lines():
                if first is None and line.startswith("data:"):
                    first = time.perf_counter() - start
        sse_rate = reply["tokens"] / (time.perf_counter() - start)
    return json_rate, sse_rate, first or 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="HF model dir (default: random Qwen2.5-0.5B)")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        model_dir = (
            args.model.resolve() if args.model else build_random_qwen(workdir / "model", QWEN25_05B)
        )
        server, base = start_server(model_dir, workdir)
        try:
            time_server(base, 4)  # warm-up
            generate_rates, json_rates, sse_rates, ttfts = [], [], [], []
            for _ in range(args.runs):
                generate_rates += time_generate(model_dir, args.tokens, 1)
                json_rate, sse_rate, ttft = time_server(base, args.tokens)
                json_rates.append(json_rate)
                sse_rates.append(sse_rate)
                ttfts.append(ttft)
        finally:
            server.terminate()
            server.wait(timeout=30)
    baseline = statistics.median(generate_rates)
    print(
        f"model: {args.model or 'random Qwen2.5-0.5B shape'}, {args.tokens} tokens, "
        f"{args.runs} runs, torch threads {torch.get_num_threads()}"
    )
    print(f"model.generate        {baseline:8.2f} tok/s")
    for label, rates in (("inferd JSON", json_rates), ("inferd SSE", sse_rates)):
        rate = statistics.median(rates)
        print(f"{label:<21} {rate:8.2f} tok/s  ratio {rate / baseline:.2f}x")
    print(f"inferd SSE first token {statistics.median(ttfts) * 1000:7.1f} ms")


if __name__ == "__main__":
    main()
