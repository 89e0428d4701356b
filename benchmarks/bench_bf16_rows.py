"""What bf16's batch invariance costs a decode step on a CPU: every Linear a
RowStableLinear (backends/torch_quant.py: fewer than three rows padded with zero rows)
and, compiled, inductor's emulate_precision_casts (torch_compiled_decode.precision_options)
against plain Linears and graphs without it.

Both models are loaded in one process from the same checkpoint, each with a batcher
decoding `rows` greedy sequences of 64-token prompts; blocks of steps alternate between
them, so both see the same machine. Where a model's weights land in memory moved its
steps by up to ~5% here (the model loaded first was faster, whichever it was), so each
side is loaded first once: the ratio of each order and their geometric mean are
printed. One run on one machine. The default model is the random Qwen2.5-0.5B of bench_engine.py
(built once into ~/.cache/inferd-bench); compiled, each model compiles at load (a
minute or two the first time).

    python benchmarks/bench_bf16_rows.py [--rows 1,2,8] [--compile] [--model DIR]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

from random_models import QWEN25_05B, cached_random_qwen

from inferd.backends import torch_backend, torch_compiled_decode
from inferd.backends.base import EngineOptions, SamplingParams
from inferd.backends.torch_backend import TorchBackend
from inferd.backends.torch_batcher import TorchBatcher

GREEDY = SamplingParams(temperature=0.0, max_tokens=100_000)
PROMPT_TOKENS = 64


@contextmanager
def plain_bf16() -> Iterator[None]:
    """Models loaded inside keep plain bf16 Linears and compile without
    emulate_precision_casts: the engine before batch-invariant bf16."""
    quantize, options = torch_backend.quantize, torch_compiled_decode.precision_options
    torch_backend.quantize = lambda model, q: model if q == "bf16" else quantize(model, q)
    torch_compiled_decode.precision_options = lambda model: {}
    try:
        yield
    finally:
        torch_backend.quantize, torch_compiled_decode.precision_options = quantize, options


def as_loaded(side: str) -> AbstractContextManager:
    """ "stable": the engine as it is; "plain": plain_bf16()."""
    return plain_bf16() if side == "plain" else nullcontext()


def load(model: Path, compile_steps: bool, threads: int) -> TorchBackend:
    options = EngineOptions(threads=threads, compile=compile_steps)
    backend = TorchBackend(str(model), "cpu", "bf16", options=options)
    backend.load()
    return backend


def decoding(backend: TorchBackend, rows: int) -> TorchBatcher:
    """A batcher whose `rows` sequences have been prefilled: every step decodes them all."""
    batcher = backend.batcher(max(rows, 1))
    for row in range(rows):
        prompt = [1000 + (row * 7 + j) % 5000 for j in range(PROMPT_TOKENS)]
        batcher.add(row, prompt, GREEDY)
    while len(batcher.step()) < rows:  # until every sequence has sampled its first token
        pass
    return batcher


def alternate(batchers: dict[str, TorchBatcher], blocks: int, steps: int) -> dict[str, float]:
    """Median seconds of a step of each batcher, blocks of `steps` alternating (the first
    step of each block not counted: the other's weights were read last)."""
    times: dict[str, list[float]] = {name: [] for name in batchers}
    for _ in range(blocks):
        for name, batcher in batchers.items():
            for index in range(steps + 1):
                started = time.perf_counter()
                batcher.step()
                if index:
                    times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="default: the random Qwen2.5-0.5B")
    parser.add_argument("--rows", default="1,2,8", help="decoding sequences, one run each")
    parser.add_argument("--compile", action="store_true", help="compiled decode steps")
    parser.add_argument("--blocks", type=int, default=10)
    parser.add_argument("--steps", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    model = args.model or cached_random_qwen(
        Path.home() / ".cache" / "inferd-bench" / "qwen2.5-0.5b-random", QWEN25_05B
    )
    mode = "compiled" if args.compile else "eager"
    print(f"{model.name}, bf16, {mode}, {args.threads} threads; step medians, padded / plain")
    rows = [int(r) for r in args.rows.split(",")]
    ratios: dict[int, list[float]] = {count: [] for count in rows}
    for first in ("stable", "plain"):
        sides = {}
        for side in (first, "plain" if first == "stable" else "stable"):
            with as_loaded(side):
                sides[side] = load(model, args.compile, args.threads)
        for count in rows:
            batchers = {}
            for side, backend in sides.items():
                with as_loaded(side):  # a batcher's runner compiles (or takes the graphs)
                    batchers[side] = decoding(backend, count)
            median = alternate(batchers, args.blocks, args.steps)
            ratios[count].append(median["stable"] / median["plain"])
            print(f"{first} loaded first, {count:>2} rows: {median['stable'] * 1e3:6.2f} / "
                  f"{median['plain'] * 1e3:6.2f} ms = {ratios[count][-1]:.3f}x")  # fmt: skip
        del sides, batchers
        gc.collect()
    for count, pair in ratios.items():
        print(f"{count:>2} rows: {statistics.geometric_mean(pair):.3f}x (geometric mean)")


if __name__ == "__main__":
    main()
