"""The two int8 kernels of backends/torch_int8.py, per weight shape and rows per step.

Every Linear shape of Qwen2.5-0.5B (the gate and up projections stacked), run through
Int8Linear's whole forward (activation quantization, matmul, scales) with each kernel:
`torch._int_mm` and oneDNN's prepacked int8 matmul. Enough copies of each weight are
cycled that they stream from memory, as in a real step, not from the cache. The ratio
is _int_mm's time over oneDNN's (above 1: oneDNN faster); torch_int8.ONEDNN_MIN_BYTES
is where it turns.

    python benchmarks/bench_int8_kernels.py [--rows 1,8,32,64] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="1,8,32,64")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
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
