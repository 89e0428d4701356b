"""How often a greedy request's tokens change when it shares its steps with others.

Each case starts 2-5 greedy requests at random steps on one torch batcher (small
`max_batch_tokens`, so prompts are prefilled in chunks beside decoding rows, and decode
rows of different lengths share a step) and runs every request alone on a fresh
batcher with the same options. A request "differs" when its tokens together are not
its tokens alone. The int8 matmuls are exact integer products, but a step's float work
is not batch-invariant by itself: decode attention runs over each group's longest row
(shorter rows padded and masked), prefill attention over the chunk at hand, a BLAS
picks its kernel by the shapes it is handed, and a different length, chunking or row
count rounds the last bits differently. Where two tokens' scores nearly tie, that flips
the greedy pick -- and int8 turns a last-bit change into a whole quantization step
where an activation sits at a rounding boundary. The engine's attention in fixed blocks
(backends/torch_attention_blocks.py) and bf16's padded rows (torch_quant.RowStableLinear)
are what keep the tokens; this counts the requests whose tokens still change.

Prompts are either slices of a real story (peaked next-token scores, the usual case)
or random token ids (flat scores, near-ties everywhere: the worst case). The model is
stories260K (heads of 8) unless `--model qwen-small` picks a random Qwen2 of 8 layers
with heads of 64 as real models have (built once into ~/.cache/inferd-bench), whose
random weights make every next-token choice a near-tie.

With `--tight` the batched runs also preempt sequences (a KV cache too small for them
all: they are recomputed when resumed) and reuse prefixes (add `--kinds shared`: prompts
that share an opening); the runs alone never do either.

    python benchmarks/bench_batch_invariance.py [--cases 60] [--precisions fp32,int8]
        [--model stories260K-folder | qwen-small] [--tight] [--kinds story,random,shared]
"""

from __future__ import annotations

import argparse
import random
import statistics
from pathlib import Path

import torch
from random_models import SMALL, cached_random_qwen

from inferd.backends.base import EngineOptions, SamplingParams
from inferd.backends.torch_backend import TorchBackend
from inferd.testing.batching import run_alone, run_together

STORIES = Path(__file__).resolve().parents[2] / "shared" / "models" / "stories260K"
# --tight: 11 blocks of 16 for 2-5 sequences of up to 102 positions (one alone fits)
TIGHT_KV_TOKENS = 176
TIGHT_PREFIX_TOKENS = 160
GREEDY = SamplingParams(temperature=0.0, repeat_penalty=1.0, max_tokens=1000)
STORY = (
    "Once upon a time, there was a little girl named Lily. She loved to play outside in "
    "the park with her friends. One day, she saw a big tree with a swing on it. She ran "
    "to the swing and sat on it. Her mom pushed her high into the sky, and Lily laughed."
)


def first_difference(a: list[int], b: list[int]) -> int | None:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), None)


def prompts_of(kind: str, story: list[int], count: int, rng: random.Random) -> list[list[int]]:
    """`count` prompts: slices of the story, random token ids, or (shared) one opening of
    the story followed by a slice each, which a prefix cache serves after the first."""
    opening = story[: rng.randint(5, 40)]
    prompts = []
    for _ in range(count):
        size = rng.randint(2, 60) if kind != "shared" else rng.randint(1, 30)
        start = rng.randrange(0, len(story) - size)
        if kind == "story":
            prompts.append(story[start : start + size])
        elif kind == "shared":
            prompts.append(opening + story[start : start + size])
        else:
            prompts.append([rng.randrange(3, 512) for _ in range(size)])
    return prompts


def measure(
    together_on: TorchBackend,
    alone_on: TorchBackend,
    story: list[int],
    kind: str,
    cases: int,
    seed: int,
) -> dict:
    """Each case's requests batched on `together_on`'s batcher, then each alone on
    `alone_on`'s."""
    rng = random.Random(seed)
    compared, where = 0, []
    for _ in range(cases):
        count = rng.randint(2, 5)
        prompts = prompts_of(kind, story, count, rng)
        joins = [rng.randint(0, 12) for _ in prompts]
        lengths = [rng.randint(16, 32) for _ in prompts]
        batcher = together_on.batcher(len(prompts))
        together = run_together(batcher, prompts, [GREEDY] * count, joins, lengths)
        for i, prompt in enumerate(prompts):
            alone = run_alone(alone_on.batcher(1), prompt, GREEDY, lengths[i])
            compared += 1
            if (at := first_difference(together[i], alone)) is not None:
                where.append(at)
    return {"requests": compared, "differ": len(where), "first_difference": where}


def loaded(
    model: Path, precision: str, compile_steps: bool, kv_tokens: int, prefix_tokens: int
) -> TorchBackend:
    options = EngineOptions(
        threads=1,
        kv_cache_tokens=kv_tokens,
        prefix_cache_tokens=prefix_tokens,
        max_batch_tokens=16,
        compile=compile_steps,
    )
    backend = TorchBackend(str(model), "cpu", precision, options=options)
    backend.load()
    return backend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", default=str(STORIES), help="a model folder or qwen-small; default: stories260K"
    )
    parser.add_argument("--precisions", default="fp32,int8")
    parser.add_argument("--cases", type=int, default=60, help="per precision and prompt kind")
    parser.add_argument("--compile", action="store_true", help="compiled steps (torch.compile)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kinds", default="story,random", help="of story, random, shared")
    parser.add_argument(
        "--tight",
        action="store_true",
        help=f"batched with a {TIGHT_KV_TOKENS}-token KV cache (sequences preempted and "
        f"recomputed) and a {TIGHT_PREFIX_TOKENS}-token prefix cache (reuse)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)  # the same kernels' blocking for every run; and quicker here
    model = Path(args.model)
    if args.model == "qwen-small":
        model = cached_random_qwen(
            Path.home() / ".cache" / "inferd-bench" / "qwen-small-random", SMALL
        )
    mode = ", batched tight (preemption, prefix reuse)" if args.tight else ""
    print(f"{model.name}, {args.cases} cases of 2-5 greedy requests each, 16-32 tokens{mode}")
    print(f"{'precision':>9} {'prompts':>7} {'requests':>8} {'differ':>7} {'share':>6}  "
          "first differing token (median, min)")  # fmt: skip
    for precision in args.precisions.split(","):
        # alone: room for anything, no prefix reuse; batched the same unless --tight
        alone_on = loaded(model, precision, args.compile, 4096, 0)
        together_on = (
            loaded(model, precision, args.compile, TIGHT_KV_TOKENS, TIGHT_PREFIX_TOKENS)
            if args.tight
            else alone_on
        )
        story = alone_on.encode_text(STORY)
        for kind in args.kinds.split(","):
            found = measure(together_on, alone_on, story, kind, args.cases, args.seed)
            where = found["first_difference"]
            position = f"{statistics.median(where):.0f}, {min(where)}" if where else "-"
            share = found["differ"] / found["requests"]
            print(f"{precision:>9} {kind:>7} {found['requests']:>8} {found['differ']:>7} "
                  f"{share:>6.1%}  {position}")  # fmt: skip


if __name__ == "__main__":
    main()
