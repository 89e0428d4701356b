"""The MLX engine in-process: inferd's MlxBatcher against mlx-lm's BatchGenerator.

One run, same model, the two interleaved and repeated (best of the repeats: the machine
may be shared). Over HTTP against `mlx_lm.server`, see bench_engine.py --backend mlx.

- load: N sequences start at once (greedy, distinct prompts); aggregate tok/s (prefill
  included) and time to first token;
- interference: a long prompt arrives while N sequences decode; the longest gap the
  decoding sequences saw while it was prefilled, over their steady gap;
- prefix: a chat's second turn on a long history, time to first token with the first
  turn's cache kept against the same request with prefix reuse off (MlxBatcher only:
  BatchGenerator has no prompt cache of its own; mlx_lm.server adds one).

    python benchmarks/bench_mlx_engine.py                        # stories260K, seconds
    python benchmarks/bench_mlx_engine.py --model small          # random 8-layer Qwen2
    python benchmarks/bench_mlx_engine.py --model qwen --streams 1,8 --new-tokens 32
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from random_models import QWEN25_05B, SHARED, SMALL, build_random_qwen

from inferd.backends.base import EngineOptions, SamplingParams
from inferd.backends.mlx_backend import MlxBackend, mlx_available
from inferd.backends.mlx_batcher import MlxBatcher

GREEDY = SamplingParams(temperature=0.0, max_tokens=1 << 20)
Run = Callable[[list[list[int]], int, list[int]], "Timing"]


class Timing:
    """Which tokens each sequence got and when (seconds from the start)."""

    def __init__(self, count: int) -> None:
        self.start = time.perf_counter()
        self.times: list[list[float]] = [[] for _ in range(count)]
        self.tokens: list[list[int]] = [[] for _ in range(count)]
        self.joined = [0.0] * count

    def join(self, index: int) -> None:
        self.joined[index] = time.perf_counter() - self.start

    def token(self, index: int, token: int) -> None:
        self.times[index].append(time.perf_counter() - self.start)
        self.tokens[index].append(token)

    def tokens_per_second(self) -> float:
        end = max(t[-1] for t in self.times if t)
        return sum(map(len, self.times)) / end

    def ttft(self) -> float:
        return max(t[0] for t in self.times if t)


def run_batcher(make: Callable[[], MlxBatcher]) -> Run:
    """Sequences join at the given step (joins[i]) and leave after `new` tokens."""

    def run(prompts: list[list[int]], new: int, joins: list[int]) -> Timing:
        batcher = make()
        timing = Timing(len(prompts))
        step = 0
        while any(len(t) < new for t in timing.times):
            for i, join in enumerate(joins):
                if join == step:
                    timing.join(i)
                    batcher.add(i, prompts[i], GREEDY)
            for result in batcher.step():
                timing.token(result.seq_id, result.token)  # type: ignore[arg-type]
                if len(timing.times[result.seq_id]) == new:
                    batcher.finish(result.seq_id)
            step += 1
        return timing

    return run


def run_batch_generator(model: object) -> Run:
    """The same with mlx-lm's BatchGenerator (its defaults: 2048-token prefill steps)."""
    from mlx_lm.generate import BatchGenerator

    def run(prompts: list[list[int]], new: int, joins: list[int]) -> Timing:
        generator = BatchGenerator(model, max_tokens=new, completion_batch_size=len(prompts))
        timing = Timing(len(prompts))
        uids: dict[int, int] = {}
        step = 0
        try:
            while any(len(t) < new for t in timing.times):
                for i, join in enumerate(joins):
                    if join == step:
                        timing.join(i)
                        (uid,) = generator.insert([prompts[i]])
                        uids[uid] = i
                for response in generator.next()[1]:
                    timing.token(uids[response.uid], response.token)
                step += 1
        finally:
            generator.close()
        return timing

    return run


def prompts_of(count: int, length: int, vocab: int, seed: str) -> list[list[int]]:
    """Distinct random prompts (no shared prefix) of ids in [10, vocab)."""
    rng = random.Random(seed)
    return [[rng.randrange(10, vocab) for _ in range(length)] for _ in range(count)]


def best(results: Sequence[float], lower: bool = False) -> float:
    return min(results) if lower else max(results)


def load(runs: dict[str, Run], args: argparse.Namespace, vocab: int) -> None:
    print("\n| streams | engine | tok/s (best) | TTFT s (best) |\n|---|---|---|---|")
    for streams in args.streams:
        prompts = prompts_of(streams, args.prompt_tokens, vocab, f"load{streams}")
        rates: dict[str, list[float]] = {name: [] for name in runs}
        ttfts: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, run in runs.items():
                timing = run(prompts, args.new_tokens, [0] * streams)
                rates[name].append(timing.tokens_per_second())
                ttfts[name].append(timing.ttft())
        for name in runs:
            print(
                f"| {streams} | {name} | {best(rates[name]):.1f} "
                f"| {best(ttfts[name], lower=True):.3f} |"
            )
        ours, theirs = best(rates["MlxBatcher"]), best(rates["BatchGenerator"])
        print(f"| {streams} | ratio | {ours / theirs:.2f}x | |")


def interference(runs: dict[str, Run], args: argparse.Namespace, vocab: int) -> None:
    streams = args.interference_streams
    prompts = prompts_of(streams, args.prompt_tokens, vocab, "steady")
    prompts += prompts_of(1, args.long_prompt_tokens, vocab, "long")
    joins = [0] * streams + [args.steady_steps]
    print("\n| engine | steady gap s | longest gap during the long prefill | ratio |")
    print("|---|---|---|---|")
    for _ in range(args.repeats):
        for name, run in runs.items():
            timing = run(prompts, args.steady_steps * 3, joins)
            arrived, first = timing.joined[streams], timing.times[streams][0]
            steady, during = [], []
            for times in timing.times[:streams]:
                for a, b in itertools.pairwise(times):
                    (during if b > arrived and a < first else steady).append(b - a)
            worst = max(during, default=0.0)
            median = statistics.median(steady)
            print(f"| {name} | {median:.3f} | {worst:.3f} | {worst / median:.1f}x |")


def prefix(engine: Callable[[EngineOptions], MlxBatcher], args: argparse.Namespace) -> None:
    vocab = min(engine(EngineOptions()).vocab_size, 32000)
    history = prompts_of(1, args.history_tokens, vocab, "history")[0]
    follow_up = prompts_of(1, 16, vocab, "follow-up")[0]
    cached, fresh = [], []
    for _ in range(args.repeats):
        kept = engine(EngineOptions())  # one engine for both turns: the cache carries over
        warm = run_batcher(lambda kept=kept: kept)
        answer = warm([history], 16, [0]).tokens[0]
        second = history + answer + follow_up
        cached.append(warm([second], 1, [0]).ttft())
        cold = run_batcher(lambda: engine(EngineOptions(prefix_cache_tokens=0)))
        fresh.append(cold([second], 1, [0]).ttft())
    c, f = best(cached, lower=True), best(fresh, lower=True)
    print(f"\nsecond turn on a {args.history_tokens}-token history: TTFT {c:.3f} s with the")
    print(f"first turn's cache, {f:.3f} s without: {c / f:.2f}x")


def model_dir(name: str, cache: Path) -> Path:
    if name == "stories":
        return SHARED / "stories260K"
    if name in ("small", "qwen"):
        folder = cache / f"{name}-random-qwen"
        if not (folder / "config.json").is_file():
            build_random_qwen(folder, SMALL if name == "small" else QWEN25_05B)
        return folder
    return Path(name)


def int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",")]


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model and --model-cache, as model_dir reads them."""
    parser.add_argument(
        "--model", default="stories", help="stories, small, qwen or a model directory"
    )
    cache = Path(tempfile.gettempdir()) / "inferd-bench-mlx"
    parser.add_argument("--model-cache", type=Path, default=cache)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    add = parser.add_argument
    add("--streams", default="1,8", type=int_list)
    add("--prompt-tokens", type=int, default=64)
    add("--new-tokens", type=int, default=64)
    add("--interference-streams", type=int, default=4)
    add("--long-prompt-tokens", type=int, default=400)
    add("--steady-steps", type=int, default=8)
    add("--history-tokens", type=int, default=400)
    add("--repeats", type=int, default=2)
    add("--skip", default="", help="comma list of: load, interference, prefix")
    args = parser.parse_args()
    if not mlx_available():
        print("mlx-lm is not installed (pip install 'inferd[mlx]')", file=sys.stderr)
        return 1
    path = model_dir(args.model, args.model_cache)
    backend = MlxBackend(str(path))
    backend.load()
    model, size = backend.batcher(1).model, backend.batcher(1).vocab_size
    vocab = min(size, 32000)

    def engine(options: EngineOptions) -> MlxBatcher:
        return MlxBatcher(model, size, options)

    runs: dict[str, Run] = {  # fresh engines, prefix reuse off: repeats must not hit
        "MlxBatcher": run_batcher(lambda: engine(EngineOptions(prefix_cache_tokens=0))),
        "BatchGenerator": run_batch_generator(model),
    }
    print(f"model {path}, {args.prompt_tokens}-token prompts, {args.new_tokens} new tokens")
    skip = set(args.skip.split(","))
    if "load" not in skip:
        load(runs, args, vocab)
    if "interference" not in skip:
        interference(runs, args, vocab)
    if "prefix" not in skip:
        prefix(engine, args)
    backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
