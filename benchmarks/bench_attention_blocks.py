"""What batch-invariant attention costs: backends/torch_attention_blocks.py against the
attention it replaced, per layer, on Qwen2.5-0.5B's heads (14 over 2 kv heads of 64).

- decode rows: blocks (keys padded to whole KEY_BLOCKs, query rows to QUERY_ROWS, the
  weighted sum one product per block) against one product over each group's longest;
- a prompt chunk: blocks against scaled_dot_product_attention (torch's fused CPU kernel),
  causal over its own keys or masked after a cached prefix.

Interleaved rounds, the median of each: a ratio from one run on one machine.

    python benchmarks/bench_attention_blocks.py [--threads 2] [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from inferd.backends.torch_attention_blocks import (
    KEY_BLOCK,
    attend_chunk,
    attend_rows,
    padded_length,
)
from inferd.backends.torch_malloc import keep_freed_memory

KV_HEADS, GROUP, HEAD_DIM = 2, 7, 64
DECODES = [(1, 192), (1, 1536), (8, 192), (8, 1536), (32, 320)]  # rows, positions
CHUNKS = [(64, 0), (512, 0), (64, 1536), (512, 1536)]  # tokens, cached before them


def one_product(
    query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """The decode attention before blocks: (kv, rows, group, d) over (kv, rows, length, d)."""
    kv_heads, rows, group = query.shape[:3]
    length = keys.shape[2]
    scores = torch.bmm(query.flatten(0, 1), keys.flatten(0, 1).transpose(1, 2))
    scores = scores.view(kv_heads, rows, group, length) + mask
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32)
    return torch.bmm(weights.flatten(0, 1), values.flatten(0, 1))


def decode_case(rows: int, positions: int) -> tuple[Callable[[], object], Callable[[], object]]:
    """(before, blocks) for `rows` decode rows, the longest over `positions`, the others
    shorter by up to half."""
    lengths = torch.linspace(positions // 2, positions, rows).long().tolist()
    query = torch.randn(KV_HEADS, rows, GROUP, HEAD_DIM)

    padded = padded_length(max(lengths))
    keys, values = torch.randn(2, KV_HEADS, rows, padded, HEAD_DIM)

    def mask(length: int) -> torch.Tensor:
        visible = torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]
        return torch.zeros(visible.shape).masked_fill(~visible, float("-inf"))[None, :, None]

    longest = max(lengths)
    old_keys, old_values, old_mask = keys[:, :, :longest], values[:, :, :longest], mask(longest)
    block_keys, block_values = (t.unflatten(2, (-1, KEY_BLOCK)) for t in (keys, values))
    block_mask = mask(padded)
    return (
        lambda: one_product(query, old_keys, old_values, old_mask),
        lambda: attend_rows(query, block_keys, block_values, block_mask),
    )


def chunk_case(tokens: int, cached: int) -> tuple[Callable[[], object], Callable[[], object]]:
    """(before, blocks) for a chunk of `tokens` after `cached` positions."""
    length = cached + tokens
    query = torch.randn(KV_HEADS, tokens, GROUP, HEAD_DIM)
    keys, values = torch.randn(KV_HEADS, length, HEAD_DIM), torch.randn(KV_HEADS, length, HEAD_DIM)
    visible = torch.arange(length)[None, :] <= torch.arange(cached, length)[:, None]
    heads_first = query.permute(0, 2, 1, 3).reshape(1, KV_HEADS * GROUP, tokens, HEAD_DIM)

    def sdpa() -> torch.Tensor:
        return F.scaled_dot_product_attention(
            heads_first,
            keys[None],
            values[None],
            attn_mask=visible if cached else None,
            is_causal=not cached,
            scale=1.0,  # the queries stand for scaled ones, as attend_chunk takes them
            enable_gqa=True,
        )

    padded = padded_length(length)
    pad = padded - length
    block_keys = F.pad(keys, (0, 0, 0, pad))
    block_values = F.pad(values, (0, 0, 0, pad))
    mask = torch.zeros(tokens, padded).masked_fill(~F.pad(visible, (0, pad)), float("-inf"))
    return sdpa, lambda: attend_chunk(query, block_keys, block_values, mask)


def timed(function: Callable[[], object], repeats: int) -> float:
    """Microseconds a call, over `repeats` calls."""
    started = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - started) / repeats * 1e6


def compare(name: str, before: Callable, blocks: Callable, rounds: int) -> None:
    before(), blocks()  # warm
    repeats = max(3, int(20_000 / max(timed(blocks, 1), 1.0)))  # ~20 ms a round each
    times: dict[str, list[float]] = {"before": [], "blocks": []}
    for _ in range(rounds):
        times["before"].append(timed(before, repeats))
        times["blocks"].append(timed(blocks, repeats))
    old, new = (statistics.median(times[key]) for key in ("before", "blocks"))
    print(
        f"{name:<28} {old:>10.0f} {new:>10.0f} {new / old:>7.2f}x {24 * (new - old) / 1e3:>+9.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as a server does: its temporaries' pages are kept, not faulted in again
    torch.manual_seed(0)
    print(f"{args.threads} threads; us a layer (median of {args.rounds} interleaved rounds)")
    print(f"{'case':<28} {'before':>10} {'blocks':>10} {'ratio':>8} {'ms/24 layers':>9}")
    with torch.inference_mode():
        for rows, positions in DECODES:
            compare(f"decode {rows} rows, {positions}", *decode_case(rows, positions), args.rounds)
        for tokens, cached in CHUNKS:
            name = f"chunk {tokens} after {cached}"
            compare(name, *chunk_case(tokens, cached), args.rounds)


if __name__ == "__main__":
    main()
