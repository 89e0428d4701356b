"""Streaming overhead of the OpenAI-compatible route: POST /v1/chat/completions against
API.md's POST /chat/completions, the same chat request, on one real inferd server.

Both are greedy, stateless-equivalent requests for the same number of tokens, run in
alternation; the report gives medians of tokens/s and time to first token, and the
ratios /v1 over /chat/completions. The tiny stories260K model makes the HTTP layer's
share as large as it gets (a bigger model hides it behind the forward pass).

    python benchmarks/bench_openai.py                       # ../shared/models/stories260K
    python benchmarks/bench_openai.py --model PATH --tokens 64 --runs 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from bench_stream import start_server

PROMPT = "Tell me a story about a cat."
DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "shared" / "models" / "stories260K"


def native(client: httpx.Client, tokens: int) -> tuple[float, float]:
    """(seconds to the first text event, seconds to the end) on /chat/completions."""
    body = {"model-name": "bench", "prompt": PROMPT, "max-token": tokens, "temperature": 0}
    start, first = time.perf_counter(), None
    with client.stream("POST", "/chat/completions", json=body) as response:
        for line in response.iter_lines():
            if first is None and line.startswith("data:"):
                first = time.perf_counter() - start
    return first or 0.0, time.perf_counter() - start


def openai(client: httpx.Client, tokens: int) -> tuple[float, float, int]:
    """(first content chunk, end, completion tokens) on /v1/chat/completions."""
    body = {
        "model": "bench",
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": tokens,
        "temperature": 0,
        "stream": True,
    }
    start, first, used = time.perf_counter(), None, 0
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if first is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                first = time.perf_counter() - start
            if chunk.get("usage"):
                used = chunk["usage"]["completion_tokens"]
    return first or 0.0, time.perf_counter() - start, used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server, base = start_server(args.model.resolve(), Path(tmp))
        try:
            with httpx.Client(base_url=base, timeout=600) as client:
                native(client, 4), openai(client, 4)  # warm-up
                rows: dict[str, list[tuple[float, float]]] = {"native": [], "v1": []}
                tokens = 0
                for _ in range(args.runs):
                    rows["native"].append(native(client, args.tokens))
                    first, total, tokens = openai(client, args.tokens)
                    rows["v1"].append((first, total))
        finally:
            server.terminate()
            server.wait(timeout=30)
    # Greedy and the same prompt: both routes generate the same `tokens` tokens.
    rate = {k: statistics.median(tokens / total for _, total in v) for k, v in rows.items()}
    ttft = {k: statistics.median(first for first, _ in v) * 1000 for k, v in rows.items()}
    print(f"model: {args.model.name}, {tokens} tokens per request, {args.runs} runs each")
    print(f"/chat/completions     {rate['native']:8.1f} tok/s   TTFT {ttft['native']:6.1f} ms")
    print(f"/v1/chat/completions  {rate['v1']:8.1f} tok/s   TTFT {ttft['v1']:6.1f} ms")
    print(
        f"ratio /v1 / native: tok/s {rate['v1'] / rate['native']:.3f}x, "
        f"TTFT {ttft['v1'] / ttft['native']:.3f}x"
    )


if __name__ == "__main__":
    main()
