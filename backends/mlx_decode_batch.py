"""The decoding sequences of an MLX model: their KV caches as rows of mlx-lm's batch caches.

mlx-lm's BatchKVCache (and its kin for other cache types) holds left-padded rows plus the
attention mask and per-row RoPE offsets that go with them. A sequence whose prompt is
computed joins with its own cache (`merge`, then `extend` to right-align it with the
rows already here) and leaves through `filter`, which also drops padding nobody needs
any more; a steady batch is never repacked. Each decode step is one forward pass over
all rows, one new token each.

Imported lazily (mlx may be missing); runs on the model-owner thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import mlx.core as mx
import mlx.nn as nn


class DecodeBatch:
    """The rows' caches. A lone row keeps its own per-sequence cache: mlx-lm's batch caches
    cost a mask and per-row offsets in every layer, which one row does not need."""

    def __init__(self) -> None:
        self.seq_ids: list[int] = []  # one per row, in row order
        self._cache: list[Any] = []  # one cache per layer: a batch's, or the lone row's own
        self._batched = False

    def __len__(self) -> int:
        return len(self.seq_ids)

    def __contains__(self, seq_id: int) -> bool:
        return seq_id in self.seq_ids

    def join(self, seq_ids: Sequence[int], caches: Sequence[list[Any]]) -> None:
        """Add sequences with their own caches (which this batch now owns) as new rows."""
        if not seq_ids:
            return
        if not self.seq_ids and len(seq_ids) == 1:
            self.seq_ids, self._cache, self._batched = list(seq_ids), caches[0], False
            return
        self.join_merged(seq_ids, _merge(caches))

    def join_merged(self, seq_ids: Sequence[int], merged: list[Any]) -> None:
        """Add rows that are already batch caches (mlx_prefill.prefill_together's)."""
        if self._cache and not self._batched:
            self._cache = _merge([self._cache])
        if self._cache:
            for mine, theirs in zip(self._cache, merged, strict=True):
                mine.extend(theirs)
        else:
            self._cache = merged
        self._batched = True
        self.seq_ids.extend(seq_ids)

    def extract(self, seq_id: int) -> list[Any]:
        """One row's cache without padding, as mlx-lm's per-sequence cache type: a copy,
        or a lone row's own cache (for a row that is leaving)."""
        if not self._batched:
            return list(self._cache)
        row = self.seq_ids.index(seq_id)
        return [layer.extract(row) for layer in self._cache]

    def remove(self, seq_ids: Sequence[int]) -> None:
        leaving = set(seq_ids)
        keep = [row for row, seq_id in enumerate(self.seq_ids) if seq_id not in leaving]
        if len(keep) == len(self.seq_ids):
            return
        if len(keep) == 1 and self._batched:  # back to a lone row: its own cache again
            self._cache = [layer.extract(keep[0]) for layer in self._cache]
            self._batched = False
        elif keep and self._batched:
            for layer in self._cache:
                layer.filter(keep)
        elif not keep:
            self._cache = []  # frees the buffers
        self.seq_ids = [self.seq_ids[row] for row in keep]

    def forward(self, model: nn.Module, inputs: mx.array | Sequence[int]) -> mx.array:
        """Lazy (rows, vocab) logits of one token per row (in row order) after its cache."""
        logits = model(mx.array(inputs)[:, None], cache=self._cache)
        return logits[:, -1, :]

    def sizes(self) -> list[int]:
        return [layer.size() for layer in self._cache]

    def roll_back(self, sizes: Sequence[int]) -> bool:
        """Forget positions appended since sizes() (a forward pass that raised while it
        was being built); False when a layer cannot be trimmed."""
        return roll_back(self._cache, sizes)


def _merge(caches: Sequence[list[Any]]) -> list[Any]:
    """Per-sequence caches as batch caches, one row each (mlx-lm's merge left-pads)."""
    return [layer.merge([cache[i] for cache in caches]) for i, layer in enumerate(caches[0])]


def roll_back(cache: Sequence[Any], sizes: Sequence[int]) -> bool:
    """Trim each layer of a cache back to its size in `sizes`; False if one cannot be."""
    for layer, size in zip(cache, sizes, strict=True):
        extra = layer.size() - size
        if extra > 0 and not (layer.is_trimmable() and layer.trim(extra) == extra):
            return False
    return True
