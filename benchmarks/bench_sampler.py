"""The torch sampler's time per step (backends/torch_sampler.py) for each route's defaults
(and min-p on the OpenAI routes').

Qwen's 151,936-token vocabulary, logits drawn at random: "peaked" (scaled up, as a
trained model's next token usually is: its top_p 0.95 lies within a few hundred tokens)
and "flat" (as a random-weights model's: its nucleus is most of the vocabulary). Each
set of parameters is what a route sends when the client leaves it out.

    python benchmarks/bench_sampler.py [--rows 1,8] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from inferd.backends.base import SamplingParams
from inferd.backends.torch_malloc import keep_freed_memory
from inferd.backends.torch_sampler import Sampler
from inferd.sequence import SequenceState

VOCAB = 151_936
DEFAULTS = {
    "greedy (temperature 0)": SamplingParams(temperature=0.0),
    "/chat/completions (top-k 40, top-p 0.95, penalty 1.1)": SamplingParams(
        temperature=0.7, top_k=40, top_p=0.95, repeat_penalty=1.1
    ),
    "/completions (top-p 0.95, no top-k)": SamplingParams(temperature=0.7, top_k=0, top_p=0.95),
    "OpenAI routes (temperature 1, no top-k or top-p)": SamplingParams(
        temperature=1.0, top_k=0, top_p=1.0
    ),
    "OpenAI routes with min_p 0.05": SamplingParams(
        temperature=1.0, top_k=0, top_p=1.0, min_p=0.05
    ),
}
SHAPES = {"peaked": 4.0, "flat": 1.0}


def step_ms(sampler: Sampler, logits: torch.Tensor, params: SamplingParams, repeats: int) -> float:
    seqs = []
    for row in range(logits.shape[0]):
        seq = SequenceState.new(row, list(range(100, 400)), params)
        seq.sampler_state = sampler.new_generator(params)
        seqs.append(seq)
    sampler.sample(logits, seqs)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sampler.sample(logits, seqs)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="1,8", help="rows sampled per step")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as the server does: a step's large temporaries reuse their pages
    sampler = Sampler(torch.device("cpu"), VOCAB)
    rows = [int(r) for r in args.rows.split(",")]
    print(f"ms per step, {args.threads} threads, vocabulary {VOCAB:,}")
    print("| defaults | logits | " + " | ".join(f"{r} rows" for r in rows) + " |")
    print("|---|---|" + "---|" * len(rows))
    generator = torch.Generator().manual_seed(0)
    for label, params in DEFAULTS.items():
        for shape, scale in SHAPES.items():
            cells = []
            for count in rows:
                logits = torch.randn(count, VOCAB, generator=generator) * scale
                cells.append(f"{step_ms(sampler, logits, params, args.repeats):.2f}")
            print(f"| {label} | {shape} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
