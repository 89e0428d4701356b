"""Attention arithmetic in fixed blocks: a query's result does not depend on what else
shares its call.

A request batched must give the tokens it gives alone (docs/engine.md, "Batch
invariance"), and attention is where batching changes a query's arithmetic: decode rows
are padded to their group's longest, a prompt's queries are multiplied in one product
with the rest of the chunk the scheduler gave it, and a BLAS picks its kernel -- with
it the order of a sum's additions -- by the shapes it is handed. Measured with torch's
MKL on x86 (tests/test_torch_attention_blocks.py checks each on the machine it runs on):

- a query's scores q.k are the same bits for any number of keys that is a multiple of
  32, and for any number of query rows around it that is a multiple of 4 (a row in a
  part-filled tile runs through another kernel);
- softmax over keys padded with masked positions adds exact zeros: the same bits;
- weights x values in one product over all the keys is not (the kernel splits the sum
  by the key count), so it is summed in blocks of KEY_BLOCK keys, one product per block,
  and the blocks' sums are added in order: a padded block adds exact zeros.

So a call's keys are padded to a multiple of KEY_BLOCK (with masked positions) and its
query rows to a multiple of QUERY_ROWS (with zero rows), and a decode row computes
what the same position computes in any prompt chunk. The cost (Qwen2.5-0.5B's heads, 2
cores, eager; benchmarks/bench_attention_blocks.py): ~14 us a layer more for a step's
decode rows than one product over the keys, a prompt chunk 1.0-1.2x the time of torch's
fused scaled_dot_product_attention; the server's one stream and 8 streams measured
level with it (docs/engine-benchmarks.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

KEY_BLOCK = 64  # keys are padded to a multiple, and summed over in blocks, of this
QUERY_ROWS = 8  # a product's query rows are padded to a multiple of this
# A prompt chunk's scores at a time, in values (4 MiB of float32): a chunk of 512 tokens
# over 30,000 cached positions would otherwise hold 0.9 GiB of them at once. Measured
# against 8, 16 and 32 MiB: 1.1-1.2x faster over 2,048 keys (caches), as fast over 512.
MAX_SCORES = 1 << 20


def padded_length(length: int) -> int:
    """The number of key positions a query over `length` positions attends to, padding
    included."""
    return -(-length // KEY_BLOCK) * KEY_BLOCK


def attend_rows(
    query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """Single-token rows over their own keys: scaled queries (kv_heads, rows, group,
    head_dim) against keys and values in whole blocks, (kv_heads, rows, blocks, KEY_BLOCK,
    head_dim), masked by (1, rows, 1, blocks * KEY_BLOCK) 0 / -inf or not at all:
    (kv_heads, rows, group, head_dim). One product per (kv head, row), each with its
    group of query heads.

    The keys come in blocks, not as one length, so that a compiled graph knows the length
    a multiple of KEY_BLOCK without being told (it cannot split an unbacked length)."""
    kv_heads, rows, group, head_dim = query.shape
    length = keys.shape[2] * KEY_BLOCK
    padded_group = group + -group % QUERY_ROWS
    # (kv * rows, group padded, d) @ (kv * rows, d, length); the keys flattened by their
    # own sizes: compiled, a view inductor can prove (it would copy them otherwise)
    flat_keys = keys.flatten(2, 3).flatten(0, 1)
    scores = torch.bmm(_padded_rows(query.flatten(0, 1)), flat_keys.transpose(1, 2))
    scores = scores.view(kv_heads, rows, padded_group, length)
    if mask is not None:
        scores = scores + mask
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(values.dtype)
    attended = _block_sums(weights.flatten(0, 1), values.flatten(0, 1))
    return attended.view(kv_heads, rows, padded_group, head_dim)[:, :, :group]


def attend_chunk(
    query: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    max_scores: int = MAX_SCORES,
) -> torch.Tensor:
    """A prompt chunk's tokens over their sequence's keys: scaled queries (kv_heads,
    tokens, group, head_dim) against (kv_heads, length, head_dim) keys and values, `length`
    a multiple of KEY_BLOCK, masked by (tokens, length) 0 / -inf: (kv_heads, tokens,
    group, head_dim). One product per kv head over all its query heads of as many tokens
    as keep the scores within `max_scores` values: the same bits for any such split."""
    kv_heads, tokens, group, head_dim = query.shape
    length = keys.shape[1]
    step = max(1, max_scores // (kv_heads * group * length))
    if tokens > step:
        parts = [
            attend_chunk(query[:, start : start + step], keys, values, mask[start : start + step])
            for start in range(0, tokens, step)
        ]
        return torch.cat(parts, dim=1)
    rows = tokens * group
    scores = torch.bmm(_padded_rows(query.reshape(kv_heads, rows, head_dim)), keys.transpose(1, 2))
    scores[:, :rows].view(kv_heads, tokens, group, length).add_(mask[:, None])
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(values.dtype)
    blocks = values.unflatten(1, (-1, KEY_BLOCK))
    # a kv head at a time: its weights' blocks are a strided view BLAS reads as it is,
    # where all heads at once need a copy of them (2.3x slower over 2,048 keys)
    attended = torch.stack([_head_block_sums(w, v) for w, v in zip(weights, blocks, strict=True)])
    return attended[:, :rows].view(kv_heads, tokens, group, head_dim)


def _padded_rows(query: torch.Tensor) -> torch.Tensor:
    """(calls, rows, d) with zero rows appended up to a multiple of QUERY_ROWS."""
    extra = -query.shape[1] % QUERY_ROWS
    return F.pad(query, (0, 0, 0, extra)) if extra else query


def _head_block_sums(weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """_block_sums for one call: weights (rows, blocks * KEY_BLOCK) x values (blocks,
    KEY_BLOCK, d), the same bits: (rows, d)."""
    per_block = weights.unflatten(-1, (values.shape[0], KEY_BLOCK)).transpose(0, 1)
    return torch.bmm(per_block, values).sum(0)  # (blocks, rows, d) summed over the blocks


def _block_sums(weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """weights (calls, rows, blocks * KEY_BLOCK) x values (calls, blocks, KEY_BLOCK, d),
    summed over the keys a block at a time: (calls, rows, d)."""
    calls, rows = weights.shape[:2]
    blocks, head_dim = values.shape[1], values.shape[3]
    per_block = weights.unflatten(-1, (blocks, KEY_BLOCK)).transpose(1, 2)
    sums = torch.bmm(
        per_block.reshape(calls * blocks, rows, KEY_BLOCK), values.flatten(0, 1)
    )  # (calls * blocks, rows, d)
    return sums.view(calls, blocks, rows, head_dim).sum(1)
