"""The two int8 kernels of backends/torch_int8.py, per weight shape and rows per step.

Every Linear shape of Qwen2.5-0.5B (the gate and up projections stacked), run through
Int8Linear's whole forward (activation quantization, matmul, scales) with each kernel:
`torch._int_mm` and oneDNN's prepacked int8 matmul. Enough copies of each weight are
cycled that they stream from memory, as in a real step, not from the cache. The ratio
is _int_mm's time over oneDNN's (above 1: oneDNN faster); torch_int8.ONEDNN_MIN_BYTES
is where it turns.

    python benchmarks/bench_int8_kernels.py [--rows 1,8,32,64] [--threads 2]

`--one-row` instead streams the largest MLP weight (gate/up, 896 x 9,728) at one row
through every int8 kernel torch offers -- the two above on ready-quantized activations,
fbgemm's `quantize_dynamic` Linear, `_weight_int8pack_mm` on bf16 and float32
activations -- beside a plain read of the same bytes, in GB/s of weights: how close each
kernel comes to the memory's read rate.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial

import torch
from engine_bench.baselines import best_seconds

from inferd.backends import torch_int8
from inferd.backends.torch_int8 import Int8Linear, onednn_int8_is_exact

# (in, out) of each Linear of Qwen2.5-0.5B: q, k/v, o, gate+up, down, the output projection
SHAPES = ((896, 896), (896, 128), (896, 9728), (4864, 896), (896, 151936))
STREAMED_BYTES = 256 << 20  # copies of a weight per kernel, so they do not fit in a cache


def layers(in_features: int, out_features: int, onednn: bool) -> list[Int8Linear]:
    torch_int8.ONEDNN_MIN_BYTES = 1 if onednn else 1 << 62
    copies = max(2, STREAMED_BYTES // (in_features * out_features))
    linear = torch.nn.Linear(in_features, out_features, bias=False)
    return [Int8Linear(linear) for _ in range(copies)]


def per_call_us(stack: list[Int8Linear], x: torch.Tensor, repeats: int = 3) -> float:
    for layer in stack[:2]:
        layer(x)
    start = time.perf_counter()
    for _ in range(repeats):
        for layer in stack:
            layer(x)
    return (time.perf_counter() - start) / (repeats * len(stack)) * 1e6


def gigabytes_per_s(calls: list[Callable[[], object]], nbytes: int, repeats: int = 5) -> float:
    """Weight bytes per second over the best of `repeats` passes of every call."""

    def one_pass() -> None:
        for call in calls:
            call()

    return nbytes * len(calls) / best_seconds(one_pass, torch.device("cpu"), repeats) / 1e9


def one_row_kernels(in_features: int = 896, out_features: int = 9728) -> dict[str, tuple]:
    """Each kernel's GB/s of int8 weights streamed at one row, and its share of a plain
    read of the same bytes just before and after it (a shared machine's memory moves)."""
    nbytes = in_features * out_features
    weights = [
        torch.randint(-127, 128, (out_features, in_features), dtype=torch.int8)
        for _ in range(max(2, STREAMED_BYTES // nbytes))
    ]
    as_floats = [w.view(torch.float32) for w in weights]  # the same bytes, summed
    rates: dict[str, tuple] = {}

    def measure(name: str, calls: list[Callable[[], object]]) -> None:
        before = gigabytes_per_s([w.sum for w in as_floats], nbytes)
        rate = gigabytes_per_s(calls, nbytes)
        after = gigabytes_per_s([w.sum for w in as_floats], nbytes)
        rates[name] = (rate, rate / ((before + after) / 2))

    quantized = torch.randint(-127, 128, (1, in_features)).float()
    for name, onednn in (("_int_mm", False), ("oneDNN", True)):
        stack = layers(in_features, out_features, onednn)
        measure(name, [partial(la.product, la.kernel_input(quantized.clone())) for la in stack])
        del stack
    x = torch.randn(1, in_features)
    linear = torch.ao.nn.quantized.dynamic.Linear
    fbgemm = [partial(linear(in_features, out_features, dtype=torch.qint8), x) for _ in weights]
    measure("fbgemm quantize_dynamic Linear", fbgemm)
    del fbgemm
    scales = torch.rand(out_features)
    for dtype in (torch.bfloat16, torch.float32):
        xd, sd = x.to(dtype), scales.to(dtype)
        measure(
            f"_weight_int8pack_mm, {str(dtype)[6:]} activations",
            [partial(torch.ops.aten._weight_int8pack_mm, xd, w, sd) for w in weights],
        )
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="1,8,32,64")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--one-row", action="store_true", help="every int8 kernel at one row")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.one_row:
        with torch.inference_mode():
            rates = one_row_kernels()
        print(f"threads {args.threads}; gate/up's 896 x 9,728 int8 weight at one row")
        print(f"{'kernel':>42} {'GB/s':>6}  of a plain read of the same bytes around it")
        for name, (rate, share) in rates.items():
            print(f"{name:>42} {rate:6.1f}  {share:.0%}")
        return
    if not onednn_int8_is_exact():
        raise SystemExit("oneDNN's int8 matmul is unavailable or inexact on this CPU")
    rows = [int(r) for r in args.rows.split(",")]
    print(f"threads {args.threads}; microseconds per call; ratio = _int_mm / oneDNN")
    print(f"{'in x out':>14} {'MB':>6} " + " ".join(f"{f'{r} rows':>22}" for r in rows))
    with torch.inference_mode():
        for in_features, out_features in SHAPES:
            int_mm = layers(in_features, out_features, onednn=False)
            onednn = layers(in_features, out_features, onednn=True)
            cells = []
            for count in rows:
                x = torch.randn(count, in_features)
                a, b = per_call_us(int_mm, x), per_call_us(onednn, x)
                cells.append(f"{a:7.0f} {b:7.0f} {a / b:5.2f}x")
            size = in_features * out_features / 1e6
            print(f"{in_features:>6} x {out_features:<6} {size:6.1f} " + " ".join(cells))
            del int_mm, onednn


if __name__ == "__main__":
    main()
