"""Decode passes over rows of mixed context lengths, their attention in one padded group
or split in two by length (backends/torch_attention.py, decode_split).

The torch engine's batcher (int8, compiled, as served) on the random Qwen2.5-0.5B shape
(benchmarks/random_models.py), in-process: each case's sequences are prefilled, then
their decode passes are timed, alternating blocks of passes with the split allowed
(SPLIT_MIN_POSITIONS as shipped) and not (one group, as before the split), so both
sides see the same machine state. Printed: the median pass per case and side, and the
ratio.

    python benchmarks/bench_decode_lengths.py [--blocks 6] [--passes 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from pathlib import Path

from random_models import QWEN25_05B, cached_random_qwen

from inferd.backends import torch_attention
from inferd.backends.base import EngineOptions, SamplingParams
from inferd.backends.torch_backend import TorchBackend
from inferd.backends.torch_batcher import TorchBatcher

# context lengths (prompt tokens) of the rows decoding together
CASES = {
    "1 row at 64": [64],
    "1 row at 1,500": [1500],
    "8 rows at 100": [100] * 8,
    "8 rows at 100 + 1 at 2,000": [100] * 8 + [2000],
    "4 rows at 100 + 4 at 1,000": [100] * 4 + [1000] * 4,
    "8 rows at 300-1,000 + 1 at 3,000": [300, 400, 500, 600, 700, 800, 900, 1000, 3000],
}
GREEDY = SamplingParams(temperature=0.0, max_tokens=1_000_000)
SHIPPED = torch_attention.SPLIT_MIN_POSITIONS
_IDS = itertools.count()


def prefill(batcher: TorchBatcher, lengths: list[int]) -> list[int]:
    """Add one sequence per length and step until every one decodes; their ids."""
    ids = []
    for index, length in enumerate(lengths):
        seq_id = next(_IDS)
        batcher.add(seq_id, [1000 + (index * 7 + j) % 5000 for j in range(length)], GREEDY)
        ids.append(seq_id)
    scheduler = batcher.scheduler
    while scheduler.waiting or any(s.num_computed + 1 < len(s.tokens) for s in scheduler.running):
        batcher.step()
    return ids


def timed_passes(batcher: TorchBatcher, passes: int) -> list[float]:
    times = []
    for _ in range(passes):
        start = time.perf_counter()
        batcher.step()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=6, help="alternating blocks per side")
    parser.add_argument("--passes", type=int, default=10, help="decode passes per block")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model-cache", type=Path, default=Path.home() / ".cache" / "inferd-bench")
    args = parser.parse_args()
    model = cached_random_qwen(args.model_cache / "qwen2.5-0.5b-random", QWEN25_05B)
    backend = TorchBackend(str(model), "cpu", "int8", options=EngineOptions(threads=args.threads))
    backend.load()
    batcher = backend.batcher(16)
    print(f"int8, compiled, {args.threads} threads; median decode pass (ms), split vs one group")
    print("| rows' context lengths | one group | split | one / split |")
    print("|---|---|---|---|")
    for label, lengths in CASES.items():
        ids = prefill(batcher, lengths)
        sides: dict[str, list[float]] = {"one": [], "split": []}
        for _ in range(args.blocks):
            for side, threshold in (("one", 1 << 62), ("split", SHIPPED)):
                torch_attention.SPLIT_MIN_POSITIONS = threshold
                sides[side] += timed_passes(batcher, args.passes)[1:]  # the first: warm-up
        torch_attention.SPLIT_MIN_POSITIONS = SHIPPED
        for seq_id in ids:
            batcher.finish(seq_id)
        one, split = (statistics.median(sides[s]) * 1e3 for s in ("one", "split"))
        print(f"| {label} | {one:.1f} | {split:.1f} | {one / split:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
