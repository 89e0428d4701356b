"""Attention over the paged KV cache, plugged into transformers' attention interface.

A step runs one packed row of tokens through the model: first one token for each
decoding sequence, then the chunks of prompts being prefilled, each token with its own
position id. transformers computes the projections and rotary embeddings as usual and
calls the function registered here (as `config._attn_implementation`) for every layer;
the per-step StepLayout arrives through the forward's keyword arguments. The function
stores the new keys and values in the cache and attends each sequence to its own:

- decode rows together: their cached keys gathered into one padded (kv_heads, rows,
  length, head_dim) batch with a mask for the shorter rows -- in two such groups, each
  padded to its own longest, where the rows' lengths differ enough (decode_split);
- each prefill chunk on its own: its sequence's keys so far, causal from its offset.

Both in fixed blocks (backends/torch_attention_blocks.py), so that a query's result is
the same bits however its row is padded or its prompt chunked: batched, a request
decodes the tokens it decodes alone. (On a GPU, prompt chunks take torch's fused
attention instead: see _attend_chunk.)

The model is called without a transformers Cache (use_cache=False): this function is
the cache's only reader and writer, so transformers builds no mask and no cache of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

from inferd.backends.torch_attention_blocks import (
    KEY_BLOCK,
    attend_chunk,
    attend_rows,
    padded_length,
)
from inferd.backends.torch_kv_cache import NULL_SLOT, KVCache

ATTENTION_NAME = "inferd_paged"
LAYOUT_KWARG = "inferd_layout"
# Padded positions two decode row groups must save over one (decode_split): the 8 + 1
# rows below save 15,200; rows of 64 and 80 positions, 16, not worth a second group.
SPLIT_MIN_POSITIONS = 1024


@dataclass(slots=True)
class PrefillChunk:
    """Query tokens [start, start + length) of the packed row: one sequence's chunk."""

    start: int
    length: int
    kv_slots: torch.Tensor  # slots of all its positions up to the chunk's end
    # what the attention reads: kv_slots padded to a multiple of KEY_BLOCK with block 0's
    # first slot (zeros), and a (length, padded) 0 / -inf mask, causal from the chunk's
    # offset (the positions cached before it), the padding masked
    key_slots: torch.Tensor = field(init=False)
    key_mask: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        positions = len(self.kv_slots)
        padded = padded_length(positions)
        device = self.kv_slots.device
        padding = torch.full((padded - positions,), NULL_SLOT, device=device)
        self.key_slots = torch.cat([self.kv_slots, padding.to(self.kv_slots.dtype)])
        # query i sits at position offset + i and sees every position up to its own
        offset = positions - self.length
        columns = torch.arange(padded, device=device)[None, :]
        rows = torch.arange(offset, positions, device=device)[:, None]
        self.key_mask = torch.zeros((self.length, padded), device=device).masked_fill_(
            columns > rows, float("-inf")
        )


@dataclass(slots=True)
class StepLayout:
    """Where one step's tokens go in the cache and what each of them attends to."""

    cache: KVCache
    slots: torch.Tensor  # (tokens,) the cache slot of every token of the packed row
    num_decode: int = 0  # the row starts with this many single-token (decode) queries
    decode_slots: torch.Tensor | None = None  # (num_decode, longest) padded with block 0
    decode_mask: torch.Tensor | None = None  # (1, num_decode, 1, longest) 0 / -inf, or None
    prefills: list[PrefillChunk] = field(default_factory=list)
    # Decode rows split by length (decode_split): the last rows' own padded slots and
    # mask; decode_slots and decode_mask then cover the rows before them.
    decode_tail_slots: torch.Tensor | None = None
    decode_tail_mask: torch.Tensor | None = None

    def decode_groups(self) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """The decode rows' (slots, mask) groups, in row order."""
        assert self.decode_slots is not None
        groups = [(self.decode_slots, self.decode_mask)]
        if self.decode_tail_slots is not None:
            groups.append((self.decode_tail_slots, self.decode_tail_mask))
        return groups


def paged_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: object,
) -> tuple[torch.Tensor, None]:
    """transformers' attention signature: (1, heads, tokens, head_dim) in, (1, tokens,
    heads, head_dim) out."""
    layout = kwargs[LAYOUT_KWARG]
    assert isinstance(layout, StepLayout)
    layer = module.layer_idx
    layout.cache.write(layer, layout.slots, key[0], value[0])
    heads, tokens, head_dim = query.shape[1:]
    out = query.new_empty((tokens, heads, head_dim))
    if layout.num_decode:
        out[: layout.num_decode] = _decode_attention(layout, layer, query, scaling)
    for chunk in layout.prefills:
        end = chunk.start + chunk.length
        out[chunk.start : end] = _attend_chunk(layout, layer, query, chunk, scaling)
    return out.unsqueeze(0), None


def _attend_chunk(
    layout: StepLayout,
    layer: int,
    query: torch.Tensor,
    chunk: PrefillChunk,
    scaling: float | None,
) -> torch.Tensor:
    """One chunk over its sequence's keys and values as the cache holds them (its own
    just written), causal from its offset: (length, heads, head_dim).

    In blocks on a CPU, where that makes a query's result independent of the chunking.
    On a GPU through scaled_dot_product_attention's fused kernels instead: nothing makes
    cuBLAS's matmuls batch-invariant there anyway (torch_quant.RowStableLinear is for
    oneDNN on a CPU), and the fused kernels never hold a chunk's scores in memory."""
    keys, values = (t.to(query.dtype) for t in layout.cache.gather(layer, chunk.key_slots))
    if keys.device.type != "cpu":
        return fused_chunk(
            query[:, :, chunk.start : chunk.start + chunk.length], keys, values, chunk, scaling
        )
    heads, head_dim = query.shape[1], query.shape[3]
    kv_heads = keys.shape[0]
    queries = query[0, :, chunk.start : chunk.start + chunk.length]  # (heads, length, d)
    queries = queries.reshape(kv_heads, heads // kv_heads, chunk.length, head_dim)
    scale = scaling if scaling is not None else head_dim**-0.5
    attended = attend_chunk(queries.transpose(1, 2) * scale, keys, values, chunk.key_mask)
    return attended.permute(1, 0, 2, 3).reshape(chunk.length, heads, head_dim)


def fused_chunk(
    query: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    chunk: PrefillChunk,
    scaling: float | None,
) -> torch.Tensor:
    """A chunk's (1, heads, length, head_dim) queries over its (kv_heads, padded,
    head_dim) keys and values by scaled_dot_product_attention, the padding masked:
    (length, heads, head_dim)."""
    attended = F.scaled_dot_product_attention(
        query,
        keys.unsqueeze(0),
        values.unsqueeze(0),
        attn_mask=chunk.key_mask.to(query.dtype),
        scale=scaling,
        enable_gqa=True,
    )
    return attended[0].transpose(0, 1)


def _decode_attention(
    layout: StepLayout, layer: int, query: torch.Tensor, scaling: float | None
) -> torch.Tensor:
    """The decode rows' attention, all rows at once: (rows, heads, head_dim)."""
    return attend_decode_groups(
        query[0, :, : layout.num_decode],
        layout.decode_groups(),
        # (kv, rows, blocks, KEY_BLOCK, d) each
        lambda slots: layout.cache.gather(layer, slots.unflatten(1, (-1, KEY_BLOCK))),
        scaling,
    )


def decode_split(lengths: Sequence[int]) -> int:
    """How many of the decode rows of ascending `lengths` (cached positions, the new one
    included) to pad to their own longest, apart from the longer rows after them; 0: all
    in one group, padded to the longest.

    One padded group makes every row pay for the longest: 8 rows at 100 positions and one
    at 2,000 gather and multiply 9 x 2,000 keys and values a layer, and measured a decode
    pass 1.8x slower than the 8 alone (45.8 against 25.0 ms; Qwen2.5-0.5B shape, int8, 2
    cores). Two groups, at the split that pads least, are worth it once they save
    SPLIT_MIN_POSITIONS: each padded position costs ~1 us a pass (all layers), a second
    group ~40 us a layer (`benchmarks/bench_decode_lengths.py`)."""
    rows, longest = len(lengths), lengths[-1] if lengths else 0
    padded = rows * longest
    best, head = padded, 0
    for count in range(1, rows):
        area = count * lengths[count - 1] + (rows - count) * longest
        if area < best:
            best, head = area, count
    return head if padded - best >= SPLIT_MIN_POSITIONS else 0


def attend_decode_groups(
    query: torch.Tensor,
    groups: Sequence[tuple[torch.Tensor, torch.Tensor | None]],
    gather: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    scaling: float | None,
) -> torch.Tensor:
    """attend_decode over groups of consecutive rows, each with its own padded slots
    (rows_i, length_i) and mask (StepLayout.decode_groups): (rows, heads, head_dim) from
    the queries (heads, rows, head_dim). `gather(slots)` gives a group's keys and values
    in whole blocks, (kv_heads, rows_i, blocks_i, KEY_BLOCK, head_dim). A row's result is
    the same bits whatever group it is in and however long its group's longest row."""
    parts: list[torch.Tensor] = []
    start = 0
    for index, (slots, mask) in enumerate(groups):
        # Compiled, the row counts are unbacked sizes: slice only where there are two
        # groups, and take the last group as "the rest", which needs no size arithmetic.
        if len(groups) == 1:
            rows = query
        elif index == len(groups) - 1:
            rows = query[:, start:]
        else:
            rows = query[:, start : start + slots.shape[0]]
        keys, values = gather(slots)
        keys, values = keys.to(query.dtype), values.to(query.dtype)
        parts.append(attend_decode(rows, keys, values, mask, scaling))
        start += slots.shape[0]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def attend_decode(
    query: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor | None,
    scaling: float | None,
) -> torch.Tensor:
    """Single-token queries (heads, rows, head_dim) against their rows' gathered keys and
    values in whole blocks (kv_heads, rows, blocks, KEY_BLOCK, head_dim), masked by
    (1, rows, 1, blocks * KEY_BLOCK) 0 / -inf: (rows, heads, head_dim).

    Batched matrix products over (kv_head, row), each query head grouped under its
    key/value head (backends/torch_attention_blocks.py): measured 2x faster than
    scaled_dot_product_attention for single-token queries on a CPU, and 1.04-1.55x
    faster than scores as keys x queries (docs/engine-benchmarks.md)."""
    heads, rows, head_dim = query.shape
    kv_heads = keys.shape[0]
    group = heads // kv_heads
    scale = scaling if scaling is not None else head_dim**-0.5
    # (heads, rows, d) -> (kv, group, rows, d) -> (kv, rows, group, d)
    grouped = query.reshape(kv_heads, group, rows, head_dim).transpose(1, 2) * scale
    attended = attend_rows(grouped, keys, values, mask)  # (kv, rows, group, d)
    return attended.permute(1, 0, 2, 3).reshape(rows, heads, head_dim)


AttentionInterface.register(ATTENTION_NAME, paged_attention)
