"""Prompt chunks through an mlx-lm model: one prompt into its own cache, or several together.

A chunk that leaves the rest of its prompt for later steps runs on the sequence's own
cache. The last chunks of several prompts, which all join the decode batch in the same
step, run as one forward pass instead, as mlx-lm's BatchGenerator prefills: their caches
are merged into batch caches (left-padded rows), the chunks right-padded to the longest,
and the padding rolled to the left afterwards, so every row ends at the batch's edge and
the merged caches can join the decode batch as they are. Everything is lazy; the batcher
evaluates a whole step at once.

Imported lazily (mlx may be missing); runs on the model-owner thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from inferd.backends.mlx_decode_batch import roll_back


def prefill_alone(model: nn.Module, cache: list[Any], chunk: Sequence[int]) -> None:
    """Run one chunk into its sequence's cache; if building it raises, the cache is
    trimmed back first (when its layers can be trimmed) and the error re-raised."""
    sizes = [layer.size() for layer in cache]
    try:
        model(mx.array([list(chunk)]), cache=cache)
    except Exception:
        roll_back(cache, sizes)
        raise


def prefill_together(
    model: nn.Module, caches: Sequence[list[Any]], chunks: Sequence[Sequence[int]]
) -> list[Any]:
    """Run the last chunk of each prompt in one pass; returns the merged batch caches
    (one per layer, a row per prompt, in order). The caches passed in are not changed."""
    merged = [layer.merge([cache[i] for cache in caches]) for i, layer in enumerate(caches[0])]
    lengths = [len(chunk) for chunk in chunks]
    width = max(lengths)
    padding = [width - length for length in lengths]
    if any(padding):
        for layer in merged:
            layer.prepare(lengths=lengths, right_padding=padding)
    rows = [list(chunk) + [0] * pad for chunk, pad in zip(chunks, padding, strict=True)]
    model(mx.array(rows), cache=merged)
    if any(padding):
        for layer in merged:
            layer.finalize()  # the padding moves left, under the mask
    return merged
