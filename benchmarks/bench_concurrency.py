"""Concurrent decode speed of the engine: round-robin steps against batched steps.

Drives `ModelWorker` directly (no HTTP), so only the engine and the backend are timed.
For each concurrency it submits that many greedy requests at once, each with its own
prompt length and a fixed token budget, and reports the aggregate generated tokens/s
(all streams together, first submit to last finish) and the median per-stream tokens/s.
Both modes run in the same process, alternating, on the same loaded weights' files:

    round-robin  one forward pass per sequence per turn (the backend's step())
    batched      one forward pass per turn for all decoding sequences (step_many())

    python benchmarks/bench_concurrency.py                          # stories260K
    python benchmarks/bench_concurrency.py --model qwen --tokens 32  # random small Qwen2
    python benchmarks/bench_concurrency.py --modes round-robin       # baseline only
    python benchmarks/bench_concurrency.py --backend mlx             # stories260K on MLX
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import torch
from random_models import SHARED, SMALL, build_random_qwen
from transformers.utils import logging as hf_logging

from inferd.backends.base import Backend, SamplingParams
from inferd.backends.mlx_backend import MlxBackend
from inferd.backends.torch_backend import TorchBackend
from inferd.engine import ModelWorker

PROMPTS = (
    "Once upon a time",
    "Once upon a time, there was a little dog",
    "Tom and Sue went to the park",
    "One day, a big red ball rolled",
    "The sun was hot and the cat",
    "Lily had a toy car. She",
    "There was a tree",
    "Ben liked to eat apples and play with his friends in the garden",
)
MODES = ("round-robin", "batched")
BACKENDS = {"torch": TorchBackend, "mlx": MlxBackend}


async def run_once(
    backend_name: str, model_dir: Path, mode: str, concurrency: int, tokens: int
) -> tuple[float, float, int]:
    """(aggregate tok/s, median per-stream tok/s, tokens generated) for one batch of requests."""
    backend: Backend = BACKENDS[backend_name](str(model_dir))
    worker = ModelWorker(
        "bench", lambda: backend, max_concurrent=concurrency, batch_steps=mode == "batched"
    )
    try:
        await worker.ready()
        prompts = [backend.encode_text(PROMPTS[i % len(PROMPTS)]) for i in range(concurrency)]
        params = SamplingParams(max_tokens=tokens, temperature=0.0)
        await _drain(worker, [prompts[0]], SamplingParams(max_tokens=4, temperature=0.0))
        start = time.perf_counter()
        stats = await _drain(worker, prompts, params)
        elapsed = time.perf_counter() - start
    finally:
        worker.stop()
    failed = [s.finish_reason for s in stats if s.finish_reason not in ("stop", "length")]
    if failed:
        raise SystemExit(f"{mode} at concurrency {concurrency}: requests ended with {failed}")
    generated = sum(s.generated_tokens for s in stats)
    per_stream = [s.generated_tokens / (s.finished_at - s.started_at) for s in stats]
    return generated / elapsed, statistics.median(per_stream), generated


async def _drain(worker: ModelWorker, prompts: list[list[int]], params: SamplingParams) -> list:
    streams = [worker.submit(p, params) for p in prompts]

    async def consume(stream):
        async for event in stream:
            if event.finish_reason is not None:
                return event.stats

    return await asyncio.gather(*(consume(s) for s in streams))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=BACKENDS, default="torch")
    parser.add_argument("--model", default="stories", help="'stories', 'qwen' or a model dir")
    parser.add_argument("--tokens", type=int, default=64, help="max_tokens of each request")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    hf_logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as tmp:
        if args.model == "stories":
            model_dir = SHARED / "stories260K"
        elif args.model == "qwen":
            model_dir = build_random_qwen(Path(tmp) / "qwen", SMALL, context=4096)
        else:
            model_dir = Path(args.model).resolve()
        for mode in args.modes:  # warm-up: the first forward passes of a process are slow
            asyncio.run(run_once(args.backend, model_dir, mode, max(args.concurrency), 8))
        results: dict[tuple[str, int], list[tuple[float, float, int]]] = {}
        for _ in range(args.runs):
            # Modes alternate inside every run so machine noise hits both alike.
            for concurrency in args.concurrency:
                for mode in args.modes:
                    result = asyncio.run(
                        run_once(args.backend, model_dir, mode, concurrency, args.tokens)
                    )
                    results.setdefault((mode, concurrency), []).append(result)
    print(
        f"backend: {args.backend}, model: {args.model}, max_tokens {args.tokens}, "
        f"{args.runs} runs (medians), torch threads {args.threads}"
    )
    print(f"{'mode':<12} {'conc':>4} {'aggregate tok/s':>16} {'per-stream tok/s':>17} {'vs rr':>6}")
    for concurrency in args.concurrency:
        base = None
        for mode in args.modes:
            runs = results[(mode, concurrency)]
            total = statistics.median(r[0] for r in runs)
            stream = statistics.median(r[1] for r in runs)
            base = base or total
            print(
                f"{mode:<12} {concurrency:>4} {total:>16.1f} {stream:>17.1f} {total / base:>5.2f}x"
            )


if __name__ == "__main__":
    main()
