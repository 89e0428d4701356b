"""backends/torch_attention.py and torch_kv_cache.py: paged attention against plain SDPA.

Sequences of different lengths, scattered over non-contiguous blocks, attend through
the paged cache -- decode rows padded together, and a prefill chunk at an offset --
and must get what scaled_dot_product_attention gives each one on its own keys.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from inferd.backends.torch_attention import LAYOUT_KWARG, PrefillChunk, StepLayout, paged_attention
from inferd.backends.torch_kv_cache import NULL_BLOCK, KVCache

HEADS, KV_HEADS, DIM, SIZE = 4, 2, 8, 4


class Layer(torch.nn.Module):
    layer_idx = 0


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, offset: int) -> torch.Tensor:
    """(heads, n, d) queries at positions offset.. over (kv, offset + n, d): (n, heads, d)."""
    n = q.shape[1]
    mask = torch.arange(offset + n)[None, :] <= torch.arange(offset, offset + n)[:, None]
    out = F.scaled_dot_product_attention(q[None], k[None], v[None], attn_mask=mask, enable_gqa=True)
    return out[0].transpose(0, 1)


def slots(blocks: list[int], start: int, end: int) -> torch.Tensor:
    return torch.tensor([blocks[p // SIZE] * SIZE + p % SIZE for p in range(start, end)])


def test_decode_rows_and_a_prefill_chunk_match_attention_over_each_sequence():
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    cache = KVCache(1, KV_HEADS, DIM, 16, SIZE, dtype=torch.float32, device=cpu)
    # three sequences on scattered blocks: two decode (lengths 6 and 11), one prefills
    # 5 tokens after 7 already cached
    tables = {0: [5, 2], 1: [9, 3, 12], 2: [7, 1, 14, 4]}
    cached = {0: 5, 1: 10, 2: 7}
    new = {0: 1, 1: 1, 2: 5}
    keys = {s: torch.randn(KV_HEADS, cached[s] + new[s], DIM) for s in tables}
    values = {s: torch.randn(KV_HEADS, cached[s] + new[s], DIM) for s in tables}
    queries = {s: torch.randn(HEADS, new[s], DIM) for s in tables}
    for s, table in tables.items():  # what earlier steps wrote
        cache.write(
            0, slots(table, 0, cached[s]), keys[s][:, : cached[s]], values[s][:, : cached[s]]
        )

    order = [0, 1, 2]  # decode rows first, then the chunk: the packed row of one step
    step_slots = torch.cat([slots(tables[s], cached[s], cached[s] + new[s]) for s in order])
    lengths = [cached[s] + 1 for s in (0, 1)]
    decode_slots = torch.full((2, max(lengths)), NULL_BLOCK * SIZE)
    mask = torch.zeros(2, max(lengths))
    for row, s in enumerate((0, 1)):
        decode_slots[row, : lengths[row]] = slots(tables[s], 0, lengths[row])
        mask[row, lengths[row] :] = float("-inf")
    chunk = PrefillChunk(
        start=2,
        length=5,
        kv_slots=slots(tables[2], 0, 12),
        mask=torch.arange(12)[None, :] <= torch.arange(7, 12)[:, None],
    )
    layout = StepLayout(cache, step_slots, 2, decode_slots, mask[None, :, None, :], [chunk])
    query = torch.cat([queries[s] for s in order], dim=1)[None]
    new_keys = torch.cat([keys[s][:, cached[s] :] for s in order], dim=1)[None]
    new_values = torch.cat([values[s][:, cached[s] :] for s in order], dim=1)[None]

    out, _ = paged_attention(
        Layer(), query, new_keys, new_values, None, scaling=DIM**-0.5, **{LAYOUT_KWARG: layout}
    )

    expected = torch.cat([reference(queries[s], keys[s], values[s], cached[s]) for s in order])
    torch.testing.assert_close(out[0], expected)
