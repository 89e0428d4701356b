"""fp32 Linears on a CPU: `F.linear` (MKL) against oneDNN's prepacked matmul (PackedLinear).

Every Linear shape of Qwen2.5-0.5B, at several rows per call, in GB/s of weights, with
enough copies of each weight cycled that they stream from memory as in a real step,
beside a plain read of memory measured in the same run. The two are interleaved, one
pass each in turn. Also counts, per row count, the rows whose bits differ from the same
rows inside a 16-row call: batch invariance, kernel by kernel.

    python benchmarks/bench_fp32_linear.py [--rows 1,2,4,8,32] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from engine_bench.baselines import measure_read
from torch import nn

from inferd.backends.torch_packed_linear import PackedLinear, onednn_float_is_row_stable

# (in, out) of each Linear of Qwen2.5-0.5B: q, k/v, o, gate/up, down, the output projection
SHAPES = ((896, 896), (896, 128), (896, 4864), (4864, 896), (896, 151936))
STREAMED_BYTES = 512 << 20  # of each shape's copies: past any cache
Layer = Callable[[torch.Tensor], torch.Tensor]


def copies_of(in_features: int, out_features: int) -> list[nn.Linear]:
    count = max(2, STREAMED_BYTES // (4 * in_features * out_features))
    return [nn.Linear(in_features, out_features, bias=False) for _ in range(count)]


def pass_seconds(layers: list[Layer], x: torch.Tensor) -> float:
    start = time.perf_counter()
    for layer in layers:
        layer(x)
    return time.perf_counter() - start


def unstable_rows(layer: Layer, in_features: int, rows: int) -> int:
    """Rows of a `rows`-row call whose output differs from the same rows among 16."""
    x = torch.randn(16, in_features, generator=torch.Generator().manual_seed(rows))
    return int((layer(x[:rows]) != layer(x)[:rows]).any(dim=1).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    rows = parser.add_argument
    rows("--rows", default="1,2,4,8,32", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: as set)")
    parser.add_argument("--passes", type=int, default=5)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not onednn_float_is_row_stable():
        print("oneDNN's fp32 matmul is unavailable or not row-stable here: nothing to compare")
        return
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads; read {measure_read():.1f} GB/s")
    print(
        "\n| in x out | rows | F.linear GB/s | PackedLinear GB/s | speed-up "
        "| rows differing from a 16-row call: F.linear / PackedLinear |"
    )
    print("|---|---|---|---|---|---|")
    with torch.inference_mode():
        for in_features, out_features in SHAPES:
            plain = copies_of(in_features, out_features)
            packed = [PackedLinear(layer) for layer in plain]
            nbytes = 4 * in_features * out_features * len(plain)
            for rows in args.rows:
                x = torch.randn(rows, in_features)
                times: dict[str, list[float]] = {"plain": [], "packed": []}
                for _ in range(args.passes + 1):  # the first pass of each is not timed
                    times["plain"].append(pass_seconds(plain, x))  # type: ignore[arg-type]
                    times["packed"].append(pass_seconds(packed, x))  # type: ignore[arg-type]
                rate = {k: nbytes / statistics.median(v[1:]) / 1e9 for k, v in times.items()}
                differing = (
                    " / ".join(
                        str(unstable_rows(side[0], in_features, rows)) for side in (plain, packed)
                    )
                    if rows < 16
                    else "-"
                )
                print(
                    f"| {in_features} x {out_features} | {rows} | {rate['plain']:.1f} "
                    f"| {rate['packed']:.1f} | {rate['packed'] / rate['plain']:.2f}x "
                    f"| {differing} |"
                )
            del plain, packed


if __name__ == "__main__":
    main()
