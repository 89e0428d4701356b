"""backends/torch_attention.py and torch_kv_cache.py: paged attention against plain SDPA.

Sequences of different lengths, scattered over non-contiguous blocks, attend through
the paged cache -- decode rows padded together, and a prefill chunk at an offset --
and must get what scaled_dot_product_attention gives each one on its own keys, and
the same bits as each gets on its own through the cache.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from inferd.backends import torch_attention
from inferd.backends.torch_attention import (
    LAYOUT_KWARG,
    PrefillChunk,
    StepLayout,
    attend_decode,
    paged_attention,
)
from inferd.backends.torch_attention_blocks import KEY_BLOCK, padded_length
from inferd.backends.torch_kv_cache import NULL_SLOT, KVCache

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
    decode_slots = torch.full((2, padded_length(max(lengths))), NULL_SLOT)
    mask = torch.zeros(2, padded_length(max(lengths)))
    for row, s in enumerate((0, 1)):
        decode_slots[row, : lengths[row]] = slots(tables[s], 0, lengths[row])
        mask[row, lengths[row] :] = float("-inf")
    chunk = PrefillChunk(
        start=2,
        length=5,
        kv_slots=slots(tables[2], 0, 12),  # causal after the 7 cached
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


def fresh_chunk(start: int, length: int, first_slot: int) -> PrefillChunk:
    """A new prompt's first chunk: nothing cached before it."""
    return PrefillChunk(start, length, torch.arange(first_slot, first_slot + length))


@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.bfloat16])
def test_a_burst_of_new_prompts_attends_exactly_as_each_prompt_alone(cache_dtype):
    """In a bfloat16 cache too (int8's): the new prompts' keys and values are read back
    as the cache holds them, so a prompt's output is the same bits in a step of its own."""
    torch.manual_seed(1)
    cache = KVCache(1, KV_HEADS, DIM, 16, SIZE, dtype=cache_dtype, device=torch.device("cpu"))
    lengths = [5, 5, 5, 3]
    tokens = sum(lengths)
    query = torch.randn(1, HEADS, tokens, DIM)
    key, value = torch.randn(1, KV_HEADS, tokens, DIM), torch.randn(1, KV_HEADS, tokens, DIM)
    chunks, start = [], 0
    for i, length in enumerate(lengths):  # each prompt on blocks of its own
        chunks.append(fresh_chunk(start, length, SIZE * (1 + 2 * i)))
        start += length
    layout = StepLayout(cache, torch.cat([c.kv_slots for c in chunks]), prefills=chunks)
    together, _ = paged_attention(
        Layer(), query, key, value, None, scaling=DIM**-0.5, **{LAYOUT_KWARG: layout}
    )
    for chunk in chunks:
        rows = slice(chunk.start, chunk.start + chunk.length)
        own = PrefillChunk(0, chunk.length, chunk.kv_slots)
        alone, _ = paged_attention(
            Layer(),
            query[:, :, rows],
            key[:, :, rows],
            value[:, :, rows],
            None,
            scaling=DIM**-0.5,
            **{LAYOUT_KWARG: StepLayout(cache, chunk.kv_slots, prefills=[own])},
        )
        assert torch.equal(together[0, rows], alone[0])
        # what the cache gives back: rounded to its dtype
        cached_key, cached_value = (t.to(cache_dtype).to(t.dtype) for t in (key, value))
        expected = reference(query[0, :, rows], cached_key[0, :, rows], cached_value[0, :, rows], 0)
        torch.testing.assert_close(alone[0], expected)


def test_a_prompt_in_two_chunks_attends_exactly_as_in_one():
    """The second chunk after the first one's cached keys: the same bits as one chunk."""
    torch.manual_seed(2)
    cache = KVCache(1, KV_HEADS, DIM, 16, SIZE, dtype=torch.float32, device=torch.device("cpu"))
    tokens, cut = 11, 4
    query = torch.randn(1, HEADS, tokens, DIM)
    key, value = torch.randn(1, KV_HEADS, tokens, DIM), torch.randn(1, KV_HEADS, tokens, DIM)
    slots = torch.arange(SIZE, SIZE + tokens)

    def attend(start: int, end: int) -> torch.Tensor:
        chunk = PrefillChunk(0, end - start, slots[:end])  # causal after `start` cached
        layout = StepLayout(cache, slots[start:end], prefills=[chunk])
        out, _ = paged_attention(
            Layer(),
            query[:, :, start:end],
            key[:, :, start:end],
            value[:, :, start:end],
            None,
            scaling=DIM**-0.5,
            **{LAYOUT_KWARG: layout},
        )
        return out[0]

    whole = attend(0, tokens)
    assert torch.equal(torch.cat([attend(0, cut), attend(cut, tokens)]), whole)


def test_decode_attention_never_reads_a_shorter_rows_padding():
    """Rows padded to the longest of a batch: whatever the padding positions hold, the
    masked rows' results do not change, and a row without padding gets what it gets alone."""
    torch.manual_seed(0)
    heads, kv_heads, rows, length, head_dim = 14, 2, 3, 64, 64
    query = torch.randn(heads, rows, head_dim)
    keys = torch.randn(kv_heads, rows, length, head_dim)
    values = torch.randn(kv_heads, rows, length, head_dim)
    lengths = torch.tensor([64, 17, 1])
    mask = torch.zeros(1, rows, 1, length)
    mask[0, :, 0][torch.arange(length)[None] >= lengths[:, None]] = float("-inf")
    keys, values = (t.unflatten(2, (-1, KEY_BLOCK)) for t in (keys, values))
    attended = attend_decode(query, keys, values, mask, 0.125)
    assert attended.shape == (rows, heads, head_dim)
    padded = values.clone()
    padded.flatten(2, 3)[:, 1, 17:] = 1e4  # what a shorter row's padding block could hold
    padded.flatten(2, 3)[:, 2, 1:] = -1e4
    assert torch.equal(attend_decode(query, keys, padded, mask, 0.125), attended)
    alone = attend_decode(query[:, :1], keys[:, :1], values[:, :1], None, 0.125)
    assert torch.equal(alone, attended[:1])  # row 0 has no padding
    one_position = attend_decode(query[:, 2:], keys[:, 2:], values[:, 2:], mask[:, 2:], 0.125)
    assert torch.equal(one_position, attended[2:])


@pytest.mark.parametrize(
    ("lengths", "head"),
    [
        ([], 0),
        ([2000], 0),
        ([64, 80], 0),  # saves 16 padded positions: one group
        ([100] * 8, 0),
        ([100] * 8 + [2000], 8),  # saves 8 x 1,900
        ([10, 10, 1500, 1600], 2),  # the split that pads least
        ([10, 1500, 1550, 1600], 1),
    ],
)
def test_decode_rows_split_in_two_groups_where_it_saves_padding(lengths, head):
    assert torch_attention.decode_split(lengths) == head


def test_decode_rows_in_two_groups_attend_exactly_as_in_one():
    """Each group padded to its own longest: the rows' results the same bits as in one
    group padded to the longest of all."""
    torch.manual_seed(0)
    heads, kv_heads, head_dim, lengths = 14, 2, 64, [3, 5, 40, 33]
    cache = torch.randn(kv_heads, sum(lengths), head_dim)
    query = torch.randn(heads, len(lengths), head_dim)

    def group(rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        longest = padded_length(max(lengths[r] for r in rows))
        slot_rows = torch.zeros(len(rows), longest, dtype=torch.long)
        mask = torch.full((1, len(rows), 1, longest), float("-inf"))
        for i, r in enumerate(rows):
            slot_rows[i, : lengths[r]] = torch.arange(lengths[r]) + sum(lengths[:r])
            mask[0, i, 0, : lengths[r]] = 0
        return slot_rows, mask

    def gather(slot_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gathered = cache[:, slot_rows.reshape(-1)].view(kv_heads, *slot_rows.shape, head_dim)
        gathered = gathered.unflatten(2, (-1, KEY_BLOCK))
        return gathered, gathered * 2

    one = torch_attention.attend_decode_groups(query, [group([0, 1, 2, 3])], gather, 0.125)
    two = torch_attention.attend_decode_groups(query, [group([0, 1]), group([2, 3])], gather, 0.125)
    assert two.shape == (len(lengths), heads, head_dim)
    assert torch.equal(two, one)


def test_a_chunk_by_fused_attention_as_on_a_gpu_matches_the_blocks():
    """fused_chunk (prompt chunks on CUDA) attends over the same padded keys and mask."""
    torch.manual_seed(3)
    cache = KVCache(1, KV_HEADS, DIM, 16, SIZE, dtype=torch.float32, device=torch.device("cpu"))
    tokens, cached = 6, 9
    slots = torch.arange(SIZE, SIZE + cached + tokens)
    cache.write(
        0,
        slots,
        torch.randn(KV_HEADS, cached + tokens, DIM),
        torch.randn(KV_HEADS, cached + tokens, DIM),
    )
    chunk = PrefillChunk(0, tokens, slots)  # causal after `cached`
    layout = StepLayout(cache, slots[cached:], prefills=[chunk])
    query = torch.randn(1, HEADS, tokens, DIM)
    blocks = torch_attention._attend_chunk(layout, 0, query, chunk, DIM**-0.5)
    keys, values = cache.gather(0, chunk.key_slots)
    fused = torch_attention.fused_chunk(query, keys, values, chunk, DIM**-0.5)
    torch.testing.assert_close(fused, blocks)
    full_keys, full_values = cache.gather(0, slots)
    expected = reference(query[0], full_keys, full_values, cached)
    torch.testing.assert_close(fused, expected)
