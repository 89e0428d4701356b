"""Attention over the paged KV cache, plugged into transformers' attention interface.

A step runs one packed row of tokens through the model: first one token for each
decoding sequence, then the chunks of prompts being prefilled, each token with its own
position id. transformers computes the projections and rotary embeddings as usual and
calls the function registered here (as `config._attn_implementation`) for every layer;
the per-step StepLayout arrives through the forward's keyword arguments. The function
stores the new keys and values in the cache and attends each sequence to its own:

- decode rows together: their cached keys gathered into one padded (kv_heads, rows,
  length, head_dim) batch with a mask for the shorter rows, two batched matmuls -- in two
  such groups, each padded to its own longest, where the rows' lengths differ enough
  (decode_split);
- each prefill chunk on its own: its sequence's keys so far, causal from its offset;
  adjacent new prompts of one length (a burst) in one batched call.

The model is called without a transformers Cache (use_cache=False): this function is
the cache's only reader and writer, so transformers builds no mask and no cache of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

from inferd.backends.torch_kv_cache import KVCache, as_cached

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
    mask: torch.Tensor | None  # (length, kv) causal from the chunk's offset; None if none cached


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
    groups = chunk_groups(layout.prefills)
    # a chunk with nothing cached before it attends to its own new keys and values
    # only, as the cache holds them (the others read theirs back from the cache)
    if any(group[0].mask is None for group in groups):
        key, value = as_cached(key, layout.cache.dtype), as_cached(value, layout.cache.dtype)
    for group in groups:
        if group[0].mask is None:
            end = group[-1].start + group[-1].length
            out[group[0].start : end] = _attend_fresh(query, key, value, group, scaling)
            continue
        for chunk in group:
            end = chunk.start + chunk.length
            out[chunk.start : end] = _attend_cached(layout, layer, query, chunk, scaling)
    return out.unsqueeze(0), None


def chunk_groups(chunks: list[PrefillChunk]) -> list[list[PrefillChunk]]:
    """The step's prompt chunks in groups that attend in one call: a run of adjacent
    chunks of one length with nothing cached before them (a burst of new prompts of a
    length); any other chunk alone."""
    groups: list[list[PrefillChunk]] = []
    for chunk in chunks:
        last = groups[-1][-1] if groups else None
        if (
            last is not None
            and chunk.mask is None
            and last.mask is None
            and chunk.length == last.length
            and chunk.start == last.start + last.length
        ):
            groups[-1].append(chunk)
        else:
            groups.append([chunk])
    return groups


def _attend_cached(
    layout: StepLayout,
    layer: int,
    query: torch.Tensor,
    chunk: PrefillChunk,
    scaling: float | None,
) -> torch.Tensor:
    """One chunk over its sequence's cached keys and values, causal from its offset:
    (length, heads, head_dim)."""
    keys, values = (t.to(query.dtype) for t in layout.cache.gather(layer, chunk.kv_slots))
    attended = F.scaled_dot_product_attention(
        query[:, :, chunk.start : chunk.start + chunk.length],
        keys.unsqueeze(0),
        values.unsqueeze(0),
        attn_mask=chunk.mask,
        is_causal=chunk.mask is None,
        scale=scaling,
        enable_gqa=True,
    )
    return attended[0].transpose(0, 1)


def _attend_fresh(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    group: list[PrefillChunk],
    scaling: float | None,
) -> torch.Tensor:
    """Adjacent chunks of one length with nothing cached before them, each causal over
    its own new keys and values, as one batch of one call: (tokens, heads, head_dim).
    Per chunk the same, bit for bit, as a call each; 8 chunks of 64 tokens measured
    1.4x faster (Qwen2.5-0.5B's heads, 2 cores)."""
    start, count, length = group[0].start, len(group), group[0].length
    end = start + count * length

    def per_chunk(tensor: torch.Tensor) -> torch.Tensor:  # (count, heads, length, head_dim)
        return tensor[0, :, start:end].unflatten(1, (count, length)).transpose(0, 1)

    attended = F.scaled_dot_product_attention(
        per_chunk(query),
        per_chunk(key),
        per_chunk(value),
        is_causal=True,
        scale=scaling,
        enable_gqa=True,
    )
    return attended.transpose(1, 2).flatten(0, 1)


def _decode_attention(
    layout: StepLayout, layer: int, query: torch.Tensor, scaling: float | None
) -> torch.Tensor:
    """The decode rows' attention, all rows at once: (rows, heads, head_dim)."""
    return attend_decode_groups(
        query[0, :, : layout.num_decode],
        layout.decode_groups(),
        lambda slots: layout.cache.gather(layer, slots),  # (kv, rows, length, d) each
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
    (kv_heads, rows_i, length_i, head_dim). A row's result depends on its own padding only
    as padding to any length does: masked positions add zeros, in an order the matmuls'
    blocking may round differently."""
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
    values (kv_heads, rows, length, head_dim), masked by (1, rows, 1, length) 0 / -inf:
    (rows, heads, head_dim).

    Two batched matrix products over (kv_head, row), each query head grouped under its
    key/value head, measured 2x faster than scaled_dot_product_attention (with
    enable_gqa or repeated heads) for single-token queries on a CPU.

    The products are bmm over (kv_head, row) pairs flattened into one batch dimension,
    the scores queries x keys^T with the keys a transposed view of their gathered rows,
    which BLAS reads as such. Compiled (backends/torch_compiled_decode.py), a 4-d matmul
    over the transposed keys made inductor copy them into that layout one scalar at a
    time (it could not prove the flattening of an unbacked row count a view); flattened
    first, they are gathered row by row and never copied again. Against the earlier
    workaround, scores as keys x queries (whose narrow side of 7 query heads a key head
    BLAS multiplies at half speed), decode steps ran 1.18x faster for one row over 1,500
    cached tokens, 1.55x for 8 rows over 1,500, 1.41x for 32 over 300, 1.20x for 8 over
    200 and 1.04x for one over 64 (Qwen2.5-0.5B's heads, int8, 2 cores; in-process A/B,
    docs/engine-benchmarks.md).
    """
    heads, rows, head_dim = query.shape
    kv_heads, _, length, _ = keys.shape
    group = heads // kv_heads
    scale = scaling if scaling is not None else head_dim**-0.5
    # (heads, rows, d) -> (kv, group, rows, d) -> (kv, rows, group, d) -> (kv * rows, group, d)
    q = (query.reshape(kv_heads, group, rows, head_dim).transpose(1, 2) * scale).flatten(0, 1)
    # flattened by their own sizes: compiled, a row count taken from the queries (a
    # group's "the rest") would not prove the flattening a view, and inductor copies
    scores = torch.bmm(q, keys.flatten(0, 1).transpose(1, 2))  # (kv * rows, group, length)
    scores = scores.view(kv_heads, -1, group, length)
    if mask is not None:
        scores = scores + mask
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(values.dtype)
    attended = torch.bmm(weights.flatten(0, 1), values.flatten(0, 1))  # (kv * rows, group, d)
    attended = attended.view(kv_heads, -1, group, head_dim).permute(1, 0, 2, 3)
    return attended.reshape(rows, heads, head_dim)


AttentionInterface.register(ATTENTION_NAME, paged_attention)
