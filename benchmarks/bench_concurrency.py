"""The engine under load, against plain `model.generate` and the memory-bandwidth bound.

Drives `ModelWorker` directly (no HTTP: benchmarks/bench_engine.py measures the server),
on a random model of the real Qwen2.5-0.5B shape with the real tokenizer, and measures
in one run, so every figure can be read as a ratio to the others:

    generate         plain transformers `generate`, fp32 and the engine's precision
    bound            memory bandwidth (a large tensor copy) / weight bytes per token
    1 / 8 / 32       streams with 64-token prompts: aggregate tok/s, TTFT p50/p95,
                     inter-token p50/p99, errors
    interference     a 2,000-token prompt arriving while 8 streams decode: their
                     inter-token p99 during its prefill against before it
    prefix reuse     a chat's second turn on a ~1,500-token history: time to first
                     token with the history cached against the same request cold

    python benchmarks/bench_concurrency.py                     # int8, the CPU default
    python benchmarks/bench_concurrency.py --quantization fp32 --tokens 64
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from random_models import QWEN25_05B, build_random_qwen
from transformers import AutoModelForCausalLM
from transformers.utils import logging as hf_logging

from inferd.backends.base import ChatMessage, SamplingParams
from inferd.backends.torch_backend import EngineOptions, TorchBackend
from inferd.backends.torch_quant import quantize
from inferd.engine import ModelWorker
from inferd.stream import Stream

WORDS = [
    "the",
    "cat",
    "sat",
    "on",
    "a",
    "mat",
    "and",
    "looked",
    "at",
    "the",
    "small",
    "red",
    "bird",
    "in",
    "the",
    "old",
    "tree",
]


@dataclass
class Timeline:
    """Arrival times of one stream's events (monotonic seconds)."""

    submitted: float
    tokens: list[float] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ttft(self) -> float:
        return self.tokens[0] - self.submitted

    def gaps(self, start: float = 0.0, end: float = float("inf")) -> list[float]:
        times = self.tokens
        return [b - a for a, b in itertools.pairwise(times) if start <= b <= end]


async def follow(stream: Stream, timeline: Timeline) -> Timeline:
    async for event in stream:
        if event.finish_reason is not None:
            if event.finish_reason == "error":
                timeline.error = event.error
            break
        timeline.tokens.append(time.monotonic())
        timeline.text.append(event.text)
    return timeline


def submit(worker: ModelWorker, prompt: list[int], tokens: int) -> asyncio.Task[Timeline]:
    return start(worker, prompt, tokens)[1]


def start(
    worker: ModelWorker, prompt: list[int], tokens: int
) -> tuple[Timeline, asyncio.Task[Timeline]]:
    params = SamplingParams(temperature=0.0, max_tokens=tokens)
    timeline = Timeline(time.monotonic())
    return timeline, asyncio.ensure_future(follow(worker.submit(prompt, params), timeline))


def random_prompt(length: int, seed: int) -> list[int]:
    """Token ids no other prompt shares a block with (so no prefix reuse between streams)."""
    rng = random.Random(seed)
    return [rng.randrange(1_000, 150_000) for _ in range(length)]


def words(count: int, seed: int) -> str:
    return " ".join(WORDS[(seed * 7 + i * 3) % len(WORDS)] for i in range(count))


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


async def streams(worker: ModelWorker, count: int, tokens: int, first_seed: int) -> dict:
    prompts = [random_prompt(64, first_seed + i) for i in range(count)]
    start = time.monotonic()
    timelines = await asyncio.gather(*(submit(worker, p, tokens) for p in prompts))
    elapsed = time.monotonic() - start
    ok = [t for t in timelines if t.error is None and t.tokens]
    gaps = [gap for t in ok for gap in t.gaps()]
    return {
        "aggregate": sum(len(t.tokens) for t in ok) / elapsed,
        "ttft_p50": pct([t.ttft for t in ok], 0.5),
        "ttft_p95": pct([t.ttft for t in ok], 0.95),
        "itl_p50": pct(gaps, 0.5),
        "itl_p99": pct(gaps, 0.99),
        "errors": len(timelines) - len(ok),
    }


async def interference(worker: ModelWorker, backend: TorchBackend, long: int) -> dict:
    prompts = [random_prompt(64, 1000 + seed) for seed in range(8)]
    started = [start(worker, p, 100_000) for p in prompts]
    timelines = [timeline for timeline, _ in started]
    while any(not t.tokens for t in timelines):
        await asyncio.sleep(0.05)
    await asyncio.sleep(3.0)  # steady decoding
    arrival = time.monotonic()
    big = random_prompt(long, 99)
    first = await submit(worker, big, 1)
    done = time.monotonic()
    for _, task in started:
        task.cancel()
    steady = [g for t in timelines for g in t.gaps(arrival - 3.0, arrival)]
    during = [g for t in timelines for g in t.gaps(arrival, done)]
    return {
        "steady_p99": pct(steady, 0.99),
        "during_p99": pct(during, 0.99),
        "during_max": max(during, default=float("nan")),
        "prefill_s": done - arrival,
        "long_ok": first.error is None,
    }


async def prefix_reuse(worker: ModelWorker, backend: TorchBackend) -> dict:
    history = [ChatMessage("system", "You are a helpful assistant.")]
    for turn in range(12):
        history.append(ChatMessage("user", words(60, turn)))
        history.append(ChatMessage("assistant", words(50, turn + 50)))
    history.append(ChatMessage("user", words(40, 77)))
    first = backend.encode_chat(history)
    answer = await submit(worker, first, 32)
    # the history re-rendered with the answer: its tokens start with the first prompt
    second_turn = [*history, ChatMessage("assistant", "".join(answer.text))]
    second_turn.append(ChatMessage("user", "And then?"))
    second = backend.encode_chat(second_turn)
    cold_prompt = backend.encode_chat([ChatMessage("system", "Be brief."), *second_turn[1:]])
    cold = await submit(worker, cold_prompt, 1)  # same length, nothing cached for it
    warm = await submit(worker, second, 1)
    return {
        "history_tokens": len(first),
        "cold_ttft": cold.ttft,
        "warm_ttft": warm.ttft,
        "ratio": warm.ttft / cold.ttft,
        "first_turn_ok": answer.error is None,
    }


def bandwidth_gbs() -> float:
    """Copy bandwidth in GB/s (bytes read plus written), best of a few large copies."""
    source = torch.ones(64 * 1024 * 1024)  # 256 MiB
    target = torch.empty_like(source)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        target.copy_(source)
        best = min(best, time.perf_counter() - start)
    return 2 * source.numel() * 4 / best / 1e9


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes a decode step reads: every parameter and buffer but the embedding table."""
    embedding = model.get_input_embeddings().weight
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.data_ptr() != embedding.data_ptr():
            total += tensor.numel() * tensor.element_size()
    return total


def same_precision(model: torch.nn.Module, quantization: str) -> torch.nn.Module:
    """The fp32 model (in place) in the weight format the engine serves."""
    if quantization in ("bf16", "fp16", "int4"):
        model = model.to(torch.bfloat16 if quantization != "fp16" else torch.float16)
    return quantize(model, quantization)


def generate_rate(model: torch.nn.Module, prompt: list[int], tokens: int) -> float:
    """Best of three (a busy machine only ever makes a run slower)."""
    ids = torch.tensor([prompt])
    rates = []
    with torch.inference_mode():
        model.generate(ids, max_new_tokens=2, do_sample=False, pad_token_id=0)
        for _ in range(3):
            start = time.perf_counter()
            model.generate(
                ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, pad_token_id=0
            )
            rates.append(tokens / (time.perf_counter() - start))
    return max(rates)


class Baselines:
    """Plain generate (fp32 and the engine's precision) and the bandwidth bound, measured
    again right before each scenario: on a shared machine the load drifts within a run,
    so each figure is compared with baselines taken next to it."""

    def __init__(self, model_dir: Path, quantization: str) -> None:
        self.fp32 = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.fp32_bytes = weight_bytes(self.fp32)
        fresh = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.same = same_precision(fresh, quantization)
        self.same_bytes = weight_bytes(self.same)
        self.prompt = list(range(1000, 1064))

    def measure(self) -> dict[str, float]:
        bandwidth = bandwidth_gbs() * 1e9
        return {
            "generate_fp32": generate_rate(self.fp32, self.prompt, 16),
            "generate_same": generate_rate(self.same, self.prompt, 16),
            "bound": bandwidth / self.same_bytes,
            "bound_fp32": bandwidth / self.fp32_bytes,
        }


async def engine(model_dir: Path, args: argparse.Namespace, baselines: Baselines) -> dict:
    options = EngineOptions(threads=args.threads, max_batch_tokens=args.max_batch_tokens)
    backend = TorchBackend(str(model_dir), quantization=args.quantization, options=options)
    worker = ModelWorker("bench", lambda: backend, max_concurrent=32)
    results: dict = {}
    try:
        await worker.ready()
        await streams(worker, 2, 4, first_seed=10_000)  # warm-up
        for count in args.concurrency:
            base = baselines.measure()
            result = await streams(worker, count, args.tokens, first_seed=100 * count)
            results[f"{count} streams"] = {**result, **base}
        results["interference"] = await interference(worker, backend, args.long_prompt)
        results["prefix reuse"] = await prefix_reuse(worker, backend)
    finally:
        worker.stop()
        await asyncio.sleep(1.0)  # let the owner thread leave torch before the process exits
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="HF model dir (default: random Qwen2.5-0.5B)")
    parser.add_argument("--quantization", default="int8")
    parser.add_argument("--tokens", type=int, default=128, help="new tokens per stream")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--long-prompt", type=int, default=2000)
    parser.add_argument("--max-batch-tokens", type=int, default=EngineOptions().max_batch_tokens)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    hf_logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or build_random_qwen(Path(tmp) / "qwen", QWEN25_05B)
        baselines = Baselines(model_dir, args.quantization)
        results = asyncio.run(engine(model_dir, args, baselines))
    report(args, results)


def report(args: argparse.Namespace, results: dict) -> None:
    q = args.quantization
    print(
        f"model: random Qwen2.5-0.5B shape, {q}, threads {args.threads}, "
        f"max_batch_tokens {args.max_batch_tokens}, {args.tokens} new tokens per stream"
    )
    for name, row in results.items():
        cells = [f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()]
        print(f"{name:>14}: {', '.join(cells)}")
        if "aggregate" in row:
            rate = row["aggregate"]
            line = f"aggregate = {rate / row['generate_fp32']:.1f}x generate fp32"
            if name == "1 streams":
                line += (
                    f", {rate / row['bound']:.0%} of the {q} bound, "
                    f"{rate / row['generate_same']:.2f}x generate {q}"
                )
            print(f"{'':>14}  {line}")
    if "interference" in results:
        row = results["interference"]
        print(f"{'':>14}  during/steady p99 = {row['during_p99'] / row['steady_p99']:.2f}x")


if __name__ == "__main__":
    main()
