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
    def __init__(self) -> None:
        self.seq_ids: list[int] = []  # one per row, in row order
        self._cache: list[Any] = []  # one batch cache per layer; [] while empty

    def __len__(self) -> int:
        return len(self.seq_ids)

    def __contains__(self, seq_id: int) -> bool:
        return seq_id in self.seq_ids

    def join(self, seq_ids: Sequence[int], caches: Sequence[list[Any]]) -> None:
        """Add sequences with their own caches (which this batch now owns) as new rows."""
        if not seq_ids:
            return
        merged = [layer.merge([c[i] for c in caches]) for i, layer in enumerate(caches[0])]
        self.join_merged(seq_ids, merged)

    def join_merged(self, seq_ids: Sequence[int], merged: list[Any]) -> None:
        """Add rows that are already batch caches (mlx_prefill.prefill_together's)."""
        if self._cache:
            for mine, theirs in zip(self._cache, merged, strict=True):
                mine.extend(theirs)
        else:
            self._cache = merged
        self.seq_ids.extend(seq_ids)

    def extract(self, seq_id: int) -> list[Any]:
        """A copy of one row's cache, without padding (mlx-lm's per-sequence cache type)."""
        row = self.seq_ids.index(seq_id)
        return [layer.extract(row) for layer in self._cache]

    def remove(self, seq_ids: Sequence[int]) -> None:
        leaving = set(seq_ids)
        keep = [row for row, seq_id in enumerate(self.seq_ids) if seq_id not in leaving]
        if len(keep) == len(self.seq_ids):
            return
        self.seq_ids = [self.seq_ids[row] for row in keep]
        if not keep:
            self._cache = []  # frees the buffers
            return
        for layer in self._cache:
            layer.filter(keep)

    def forward(self, model: nn.Module, inputs: Sequence[int]) -> mx.array:
        """Lazy (rows, vocab) logits of one token per row (in row order) after its cache."""
        logits = model(mx.array(inputs)[:, None], cache=self._cache)
        return logits[:, -1, :]

    def sizes(self) -> list[int]:
        return [layer.size() for layer in self._cache]

    def roll_back(self, sizes: Sequence[int]) -> bool:
        """Forget positions appended since sizes() (a forward pass that raised while it
        was being built); False when a layer cannot be trimmed."""
        return roll_back(self._cache, sizes)


def roll_back(cache: Sequence[Any], sizes: Sequence[int]) -> bool:
    """Trim each layer of a cache back to its size in `sizes`; False if one cannot be."""
    for layer, size in zip(cache, sizes, strict=True):
        extra = layer.size() - size
        if extra > 0 and not (layer.is_trimmable() and layer.trim(extra) == extra):
            return False
    return True
