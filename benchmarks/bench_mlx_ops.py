"""MLX on its CPU backend: decode steps with the compiled norm and RoPE against mlx's own.

Loads the model twice, once as mlx-lm loads it and once with
`backends/mlx_compiled_ops.compile_ops` applied (what inferd's MLX backend does on a CPU),
runs the same greedy prompts through an MlxBatcher on each, and times their decode steps
interleaved, a round of steps on one then on the other, so a noisy minute hits both.
Also checks that both give the same tokens. One run, ratios only.

    python benchmarks/bench_mlx_ops.py                  # stories260K, 1 and 8 rows
    python benchmarks/bench_mlx_ops.py --model small --rows 1 --steps 10
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from bench_mlx_engine import GREEDY, add_model_arguments, int_list, model_dir, prompts_of

from inferd.backends.base import EngineOptions
from inferd.backends.mlx_backend import mlx_available
from inferd.backends.mlx_batcher import MlxBatcher


def batchers(path: Path, rows: int, prompt_tokens: int) -> dict[str, MlxBatcher]:
    """A batcher per variant, each with the same `rows` prompts prefilled."""
    from mlx_lm import load

    from inferd.backends.mlx_compiled_ops import compile_ops

    made = {}
    for name in ("mlx ops", "compiled"):
        model, _ = load(str(path))
        if name == "compiled":
            compile_ops(model)
        vocab = model.args.vocab_size
        batcher = MlxBatcher(model, vocab, EngineOptions(prefix_cache_tokens=0))
        for index, prompt in enumerate(prompts_of(rows, prompt_tokens, min(vocab, 32000), "ops")):
            batcher.add(index, prompt, GREEDY)
        made[name] = batcher
    return made


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    add = parser.add_argument
    add("--rows", default="1,8", type=int_list)
    add("--prompt-tokens", type=int, default=64)
    add("--steps", type=int, default=50, help="timed steps per round")
    add("--rounds", type=int, default=6)
    args = parser.parse_args()
    if not mlx_available():
        print("mlx-lm is not installed (pip install 'inferd[mlx]')", file=sys.stderr)
        return 1
    path = model_dir(args.model, args.model_cache)
    print(f"model {path}, {args.prompt_tokens}-token prompts, greedy")
    print("\n| rows | mlx ops ms/step | compiled ms/step | speed-up | same tokens |")
    print("|---|---|---|---|---|")
    for rows in args.rows:
        engines = batchers(path, rows, args.prompt_tokens)
        tokens: dict[str, list[tuple[int, int | None]]] = {name: [] for name in engines}
        steps: dict[str, list[float]] = {name: [] for name in engines}
        for round_ in range(args.rounds + 1):  # the first round warms up (prefill, traces)
            for name, batcher in engines.items():
                for _ in range(args.steps):
                    started = time.perf_counter()
                    results = batcher.step()
                    if round_:
                        steps[name].append(time.perf_counter() - started)
                    tokens[name] += [(r.seq_id, r.token) for r in results]
        plain, compiled = (statistics.median(steps[name]) * 1e3 for name in engines)
        same = tokens["mlx ops"] == tokens["compiled"]
        print(f"| {rows} | {plain:.3f} | {compiled:.3f} | {plain / compiled:.2f}x | {same} |")
        for batcher in engines.values():
            batcher.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
